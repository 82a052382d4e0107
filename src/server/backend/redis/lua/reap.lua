-- reap: for each station this node has listeners of. Keeps what those
-- listeners need: raises each stored seq to the caller's floor (what its
-- listeners were sent), and while the station is offline keeps its hash,
-- history and listener counts for another keep-offline time, so a station
-- with a tuned listener never starts again from a lower seq (once nobody
-- is tuned, nobody refreshes them and they expire). Then, when ARGV[2] is
-- '1' (the node has settled after connecting), finds stations still marked
-- live whose lease expired (their node died) and takes them offline,
-- announcing it once. A server-run station whose mark is set is left live:
-- a node that runs it takes it at its next tick.
-- KEYS: the live set, then (lease, station hash) per station.
-- ARGV: keep-offline ms, take offline ('1' or '0'), then (name, channel,
--       seq floor) per station.
-- Returns per station 1 (taken offline), 2 (unknown to Redis) or 0.
local out = {}
local keep = ARGV[1]
local n = (#KEYS - 1) / 2
for i = 1, n do
  local lease, st = KEYS[2 * i], KEYS[2 * i + 1]
  local name, chan, floor = ARGV[3 * i], ARGV[3 * i + 1], tonumber(ARGV[3 * i + 2])
  -- The other keys' names: the lease's, with their kind for 'lease:'.
  local p = string.sub(lease, 1, #lease - #name - 6)
  local mark, history = p .. 'auto:' .. name, p .. 'history:' .. name
  redis.call('PEXPIRE', p .. 'listeners:' .. name, keep)
  local f = redis.call('HMGET', st, 'live', 'grace', 'seq')
  if floor > tonumber(f[3] or '0') then
    redis.call('HSET', st, 'seq', floor)
  end
  if f[1] ~= '1' then
    -- Offline (or unknown, with a floor just taught): kept while tuned.
    redis.call('PEXPIRE', st, keep)
    redis.call('PEXPIRE', history, keep)
  end
  local r = 0
  if f[1] == '1' then
    if ARGV[2] == '1' and redis.call('EXISTS', lease) == 0
        and redis.call('EXISTS', mark) == 0 then
      local reason = 'timeout'
      if f[2] == '1' then reason = 'disconnected' end
      redis.call('HSET', st, 'live', '0', 'reason', reason, 'grace', '0')
      redis.call('HDEL', st, 'frame', 'token')
      redis.call('PEXPIRE', st, keep)
      redis.call('PEXPIRE', history, keep)
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
