-- stop: stop_broadcasting, or a broadcaster gone before its first update
-- (no grace period: nothing to resume). Frees the station, keeps its hash
-- (and seq) and its history for ARGV[4] ms (a station whose seq is still 0
-- never had an update: its hash goes at once, there is nothing to keep),
-- and announces it offline with reason ARGV[5] ("stopped" when not given).
-- A server-run station (its mark is set) stays live instead: the lease is
-- freed for a node that runs it, which takes it back at its next tick.
-- KEYS: lease, station hash, live set, the station's server-run mark,
--       history list.
-- ARGV: holder, channel, station name, keep-offline ms[, reason].
-- Returns 1, or 0 when the caller no longer held the lease.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'grace', '0')
  redis.call('HDEL', KEYS[2], 'token')
  return 1
end
local reason = ARGV[5] or 'stopped'
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'live', '0', 'reason', reason, 'grace', '0')
redis.call('HDEL', KEYS[2], 'frame', 'token')
local seq = redis.call('HGET', KEYS[2], 'seq')
if not seq or seq == '0' then
  redis.call('DEL', KEYS[2])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PEXPIRE', KEYS[5], ARGV[4])
redis.call('SREM', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[2], 'D' .. reason)
return 1
