-- claim: start_broadcasting. Claims a free station, or resumes one with
-- its resume token (also while its old node's lease still runs: a killed
-- node cannot release it). A station still marked live whose lease is gone
-- is announced offline first. A server-run station (its mark is set) is
-- taken over from the server's player, or from its gap between two
-- players, without an offline notice ('Hlive').
-- KEYS: lease, station hash, live set, the station's server-run mark.
-- ARGV: holder, resume token ('' for none), new token, lease ms, channel,
--       station name, most live stations (--max-stations).
-- Returns {'1', token, seq, frame} (resumed), {'2', token, seq, ''}
-- (claimed), {'-1'} (taken), {'-2'} (in its grace period) or {'-3'} (the
-- cluster has its most live stations).
local held = redis.call('GET', KEYS[1])
local st = redis.call('HMGET', KEYS[2], 'live', 'token', 'seq', 'frame', 'grace', 'by')
local live = st[1] == '1'
local seq = st[3] or '0'
if ARGV[2] ~= '' and st[2] and ARGV[2] == st[2] and (held or live) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
  redis.call('HSET', KEYS[2], 'live', '1', 'grace', '0')
  redis.call('PERSIST', KEYS[2])
  redis.call('SADD', KEYS[3], ARGV[6])
  return {'1', st[2], seq, st[4] or ''}
end
-- Held by this very caller: an earlier try of this claim ran, but its
-- reply was lost. It has the station.
if held == ARGV[1] then return {'2', st[2], seq, st[4] or ''} end
if (held and string.sub(held, 1, 5) == 'auto:')
    or (not held and live and redis.call('EXISTS', KEYS[4]) == 1) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
  redis.call('HSET', KEYS[2], 'live', '1', 'grace', '0', 'token', ARGV[3], 'by', 'live')
  if st[6] == 'auto' and st[4] then redis.call('HSET', KEYS[2], 'auto_frame', st[4]) end
  redis.call('PERSIST', KEYS[2])
  redis.call('SADD', KEYS[3], ARGV[6])
  redis.call('PUBLISH', ARGV[5], 'Hlive')
  return {'2', ARGV[3], seq, st[4] or ''}
end
if held then
  if string.sub(held, 1, 6) == 'grace:' then return {'-2'} end
  return {'-1'}
end
if not live and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[7]) then
  return {'-3'}
end
if live then
  local reason = 'timeout'
  if st[5] == '1' then reason = 'disconnected' end
  redis.call('PUBLISH', ARGV[5], 'D' .. reason)
end
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[4])
redis.call('HSET', KEYS[2], 'live', '1', 'grace', '0', 'token', ARGV[3], 'seq', seq)
redis.call('HDEL', KEYS[2], 'frame', 'reason', 'by', 'auto_frame')
redis.call('PERSIST', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[6])
redis.call('PUBLISH', ARGV[5], 'L')
return {'2', ARGV[3], seq, ''}
