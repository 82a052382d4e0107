-- reap: finds stations still marked live whose lease expired (their node
-- died) and takes them offline, announcing it once; raises each stored seq
-- to the caller's floor. A server-run station whose mark is set is left
-- live: a node that runs it takes it at its next tick.
-- KEYS: the live set, then (lease, station hash) per station.
-- ARGV: keep-offline ms, then (name, channel, seq floor) per station.
-- Returns per station 1 (taken offline), 2 (unknown to Redis) or 0.
local out = {}
local n = (#KEYS - 1) / 2
for i = 1, n do
  local lease, st = KEYS[2 * i], KEYS[2 * i + 1]
  local name, chan, floor = ARGV[3 * i - 1], ARGV[3 * i], tonumber(ARGV[3 * i + 1])
  local f = redis.call('HMGET', st, 'live', 'grace', 'seq')
  if floor > tonumber(f[3] or '0') then
    redis.call('HSET', st, 'seq', floor)
    if f[1] ~= '1' then redis.call('PEXPIRE', st, ARGV[1]) end
  end
  local r = 0
  -- The mark's key: the lease's, with 'auto:' for 'lease:'.
  local mark = string.sub(lease, 1, #lease - #name - 6) .. 'auto:' .. name
  if f[1] == '1' then
    if redis.call('EXISTS', lease) == 0 and redis.call('EXISTS', mark) == 0 then
      local reason = 'timeout'
      if f[2] == '1' then reason = 'disconnected' end
      redis.call('HSET', st, 'live', '0', 'reason', reason, 'grace', '0')
      redis.call('HDEL', st, 'frame', 'token')
      redis.call('PEXPIRE', st, ARGV[1])
      redis.call('SREM', KEYS[1], name)
      redis.call('PUBLISH', chan, 'D' .. reason)
      r = 1
    end
  elseif not f[1] then
    r = 2
  end
  out[i] = r
end
return out
