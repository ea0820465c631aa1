-- Bumps a namespace generation, making every entry keyed by the old one
-- unreachable at once.
--
-- KEYS[1]  the generation counter (hash tag {g})
-- ARGV[1]  lifetime of the counter from now, in milliseconds
-- Returns the new generation (integer).
--
-- A missing counter first starts at the server time in microseconds, as in
-- gen_lookup.lua: INCR on a missing key would restart it at 1 and could bring
-- back entries cached under generations 1, 2, … before it was lost.

if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], t[1] .. string.format('%06d', tonumber(t[2])))
end
local g = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return g
