-- renew: extends every lease still held by its holder.
-- KEYS: leases. ARGV[1]: lease ms; ARGV[i + 1]: the holder of KEYS[i].
-- Returns 1 (renewed) or 0 (lost) per lease.
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
