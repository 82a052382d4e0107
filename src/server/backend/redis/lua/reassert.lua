-- reassert: after a reconnect, the owner node writes back its lease and
-- state (a restarted Redis has lost them) unless another holder has the
-- station, and publishes a snapshot.
-- KEYS: lease, station hash, live set.
-- ARGV: holder, token, seq, frame ('' for none), lease ms, channel, name.
-- Returns 1, or 0 when someone else holds the station.
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[5])
local cur = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
redis.call('HSET', KEYS[2], 'live', '1', 'grace', '0', 'token', ARGV[2])
redis.call('HDEL', KEYS[2], 'reason')
-- Our frame is the state at our seq: written back unless Redis has moved
-- past it (a listener node's resync may have raised seq to exactly ours
-- while the frame was lost with Redis's data).
local seq = tonumber(ARGV[3])
if seq > cur then redis.call('HSET', KEYS[2], 'seq', ARGV[3]) end
if seq >= cur and ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'frame', ARGV[4]) end
redis.call('PERSIST', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[7])
redis.call('PUBLISH', ARGV[6], 'Z1' .. (redis.call('HGET', KEYS[2], 'frame') or ''))
return 1
