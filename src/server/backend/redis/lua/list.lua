-- list: one batch of the live set (SSCAN from a cursor): each live station
-- in it with its newest frame and its listeners on the other live nodes
-- (the caller adds its own). The caller walks the set batch by batch, so
-- no one call costs Redis more than a batch, however many stations there
-- are; a station may come twice (SSCAN's rule), the caller keeps one.
-- KEYS: the live set. ARGV: the caller's node id, the key prefix, cursor,
-- batch size.
-- Returns the next cursor ('0' when the walk is over), then a flat list of
-- (name, frame or '', count).
local p = ARGV[2]
local scan = redis.call('SSCAN', KEYS[1], ARGV[3], 'COUNT', ARGV[4])
local out = {scan[1]}
for _, name in ipairs(scan[2]) do
  -- A server-run station between two players has no lease, only its mark.
  if redis.call('EXISTS', p .. 'lease:' .. name) == 1
      or redis.call('EXISTS', p .. 'auto:' .. name) == 1 then
    local n = 0
    local counts = redis.call('HGETALL', p .. 'listeners:' .. name)
    for i = 1, #counts, 2 do
      if counts[i] ~= ARGV[1] and redis.call('EXISTS', p .. 'node:' .. counts[i]) == 1 then
        n = n + tonumber(counts[i + 1])
      end
    end
    table.insert(out, name)
    table.insert(out, redis.call('HGET', p .. 'station:' .. name, 'frame') or '')
    table.insert(out, tostring(n))
  end
end
return out
