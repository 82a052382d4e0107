-- release: the broadcaster's connection closed; its lease becomes a grace
-- lease ('grace:' .. holder) that lasts the grace period.
-- KEYS: lease, station hash. ARGV: holder, grace ms.
-- Returns 1, or 0 when the caller no longer held the lease.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'grace:' .. ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'grace', '1')
return 1
