-- Reads namespace generations and, when given a key template, the cache
-- entry they name: a cached read costs one round trip.
--
-- KEYS[1..n]    generation counters (hash tag {g}: one slot on Cluster)
-- ARGV[1]       lifetime of a counter created here, in milliseconds
-- ARGV[2..n+2]  optional: the text around the generations. The entry key is
--               ARGV[2] .. gen1 .. ARGV[3] .. … .. genN .. ARGV[n+2]; it is
--               built here, so it is not in KEYS, but it carries the same
--               hash tag and therefore lives in the counters' slot.
-- Returns {gen1, …, genN} or {gen1, …, genN, entry}, generations as strings
-- (they exceed what Lua numbers print exactly).
--
-- A missing counter (never set, evicted under allkeys-lru, lost in a restart)
-- starts at the server time in microseconds, never at 0: counters only move
-- up by INCR, one per write, so a fresh start above every value the old
-- counter can have reached means entries cached under an old generation
-- (which may have survived the counter) are never served again. The same
-- argument makes it safe to let counters expire (ARGV[1], refreshed by every
-- bump): namespaces nobody writes or reads any more (one per user) do not
-- pile up, and an expiry costs at most one round of misses.

local gens = {}
for i, key in ipairs(KEYS) do
  local g = redis.call('GET', key)
  if not g then
    local t = redis.call('TIME')
    g = t[1] .. string.format('%06d', tonumber(t[2]))
    redis.call('SET', key, g, 'PX', ARGV[1])
  end
  gens[i] = g
end
if #ARGV == 1 then
  return gens
end
local parts = { ARGV[2] }
for i = 1, #gens do
  parts[#parts + 1] = gens[i]
  parts[#parts + 1] = ARGV[i + 2]
end
local entry = redis.call('GET', table.concat(parts))
if entry then
  gens[#gens + 1] = entry
end
return gens
