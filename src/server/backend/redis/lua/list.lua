-- list: every live station with its newest frame and its listeners on the
-- other live nodes (the caller adds its own).
-- KEYS: the live set. ARGV: the caller's node id, the key prefix.
-- Returns a flat list of (name, frame or '', count).
local out = {}
local p = ARGV[2]
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
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
