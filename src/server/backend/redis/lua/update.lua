-- update: stores and publishes one state, if the caller holds the lease;
-- a state that starts a track is also pushed on the station's history
-- (newest first, trimmed, kept ARGV[7] ms after the last play while live).
-- KEYS: lease, station hash, history list.
-- ARGV: holder, seq, encoded sync frame, channel, the play ('' for none),
--       most plays kept, keep ms.
-- Returns {1, seq} when stored and published; {0, cur} when Redis is at
-- cur >= seq already (the caller continues from cur + 1); {-1, 0} when the
-- lease is not the caller's. Told apart, so a stored seq equal to the one
-- proposed (a reply lost, then the same seq again) is not taken for done.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0} end
local cur = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if tonumber(ARGV[2]) <= cur then return {0, cur} end
redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'frame', ARGV[3])
redis.call('PUBLISH', ARGV[4], 'S' .. ARGV[3])
if ARGV[5] ~= '' then
  redis.call('LPUSH', KEYS[3], ARGV[5])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
return {1, tonumber(ARGV[2])}
