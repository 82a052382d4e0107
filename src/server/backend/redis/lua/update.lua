-- update: stores and publishes one state, if the caller holds the lease.
-- KEYS: lease, station hash.
-- ARGV: holder, seq, encoded sync frame, channel.
-- Returns the seq stored, -1 when the lease is not the caller's, or Redis's
-- newer seq for the caller to continue from.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cur = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if tonumber(ARGV[2]) <= cur then return cur end
redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'frame', ARGV[3])
redis.call('PUBLISH', ARGV[4], 'S' .. ARGV[3])
return tonumber(ARGV[2])
