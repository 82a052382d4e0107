-- claim_auto: a server-run station's player on one node, once a tick.
-- Refreshes the station's mark (some node runs it, so a station whose
-- lease is gone stays live for such a node to take), renews the lease
-- when it is this player's, and takes the station when no one holds it:
-- its driver died, a broadcaster that took it over stopped or its grace
-- period ended, or it was not live. Listeners are told of a hand-over
-- ('Hauto') unless the station comes from another node's player.
-- KEYS: lease, station hash, live set, the station's mark.
-- ARGV: holder ('auto:' ..), lease ms, channel, station name, most live
--       stations (--max-stations), seq floor (what this player published).
-- Returns {'1'} (this player's, renewed), {'0'} (someone else's), {'-3'}
-- (the cluster has its most live stations), or {'2', seq, by, frame,
-- auto_frame}: taken, with who played it last ('auto', 'live', or '' when
-- it was not live), its newest state and the last state of the server's
-- player before a broadcaster took it over ('' for none).
redis.call('SET', KEYS[4], '1', 'PX', ARGV[2])
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'1'}
end
if held then return {'0'} end
local st = redis.call('HMGET', KEYS[2], 'live', 'seq', 'by', 'frame', 'auto_frame')
local live = st[1] == '1'
if not live and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[5]) then
  return {'-3'}
end
local seq = tonumber(st[2] or '0')
if tonumber(ARGV[6]) > seq then seq = tonumber(ARGV[6]) end
local by, frame, auto_frame = '', '', ''
if live then
  by = st[3] or 'live'
  frame = st[4] or ''
  auto_frame = st[5] or ''
else
  redis.call('HDEL', KEYS[2], 'frame', 'auto_frame')
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'live', '1', 'grace', '0', 'by', 'auto', 'seq', seq)
redis.call('HDEL', KEYS[2], 'token', 'reason')
redis.call('PERSIST', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[4])
if by ~= 'auto' then redis.call('PUBLISH', ARGV[3], 'Hauto') end
return {'2', tostring(seq), by, frame, auto_frame}
