-- sweep: the cluster's hygiene. Walks one batch of the live set and takes
-- offline every station whose lease is gone (its node died, or its
-- broadcaster left and the grace period passed) whether or not any node
-- has listeners of it: the hash keeps its seq (and the history list its
-- plays) for the keep-offline time and then expires (a node with listeners
-- of it keeps it meanwhile, see reap), the name leaves the live set, and the channel hears
-- broadcaster_offline once. Any node may run it; a station already swept
-- is no longer in the set. A server-run station whose mark is set is
-- not abandoned: a node that runs it takes it at its next tick.
-- KEYS: the live set. ARGV: cursor, batch size, keep-offline ms, key prefix.
-- Returns {next cursor ('0' when the walk is over), stations taken offline}.
local scan = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local p = ARGV[4]
local n = 0
for _, name in ipairs(scan[2]) do
  if redis.call('EXISTS', p .. 'lease:' .. name) == 0
      and redis.call('EXISTS', p .. 'auto:' .. name) == 0 then
    local st = p .. 'station:' .. name
    local f = redis.call('HMGET', st, 'live', 'grace')
    redis.call('SREM', KEYS[1], name)
    if f[1] == '1' then
      local reason = 'timeout'
      if f[2] == '1' then reason = 'disconnected' end
      redis.call('HSET', st, 'live', '0', 'reason', reason, 'grace', '0')
      redis.call('HDEL', st, 'frame', 'token')
      redis.call('PUBLISH', p .. 'ch:' .. name, 'D' .. reason)
    end
    redis.call('PEXPIRE', st, ARGV[3])
    redis.call('PEXPIRE', p .. 'history:' .. name, ARGV[3])
    n = n + 1
  end
end
return {scan[1], n}
