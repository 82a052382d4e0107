-- unseat: a node's server-run station player leaves (its node shuts
-- down). It frees the lease if it held it, so a player on another node
-- takes the station at its next tick, and shortens the station's mark:
-- when no other node runs the station, nobody refreshes it, and the
-- station goes offline like any whose lease is gone.
-- KEYS: lease, the station's mark. ARGV: holder, the mark's new ms.
-- Returns 1 when it freed the lease, else 0.
local mark = redis.call('PTTL', KEYS[2])
if mark > tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
