-- snapshot: publishes a station's current state on its own channel, so a
-- node that just subscribed gets it in order with every other change; first
-- raises the stored seq to the caller's floor (what its listeners saw).
-- KEYS: station hash. ARGV: channel, seq floor, keep-offline ms.
-- Publishes 'Z1' .. frame (live), 'Z2' .. frame (live, played by the
-- server), 'Z0' .. reason (offline) or 'Z?' (unknown to Redis). Returns 1.
local f = redis.call('HMGET', KEYS[1], 'live', 'reason', 'frame', 'seq', 'by')
if tonumber(ARGV[2]) > tonumber(f[4] or '0') then
  redis.call('HSET', KEYS[1], 'seq', ARGV[2])
  if f[1] ~= '1' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
end
if f[1] == '1' and f[5] == 'auto' then
  redis.call('PUBLISH', ARGV[1], 'Z2' .. (f[3] or ''))
elseif f[1] == '1' then
  redis.call('PUBLISH', ARGV[1], 'Z1' .. (f[3] or ''))
elseif f[1] == '0' then
  redis.call('PUBLISH', ARGV[1], 'Z0' .. (f[2] or 'stopped'))
else
  redis.call('PUBLISH', ARGV[1], 'Z?')
end
return 1
