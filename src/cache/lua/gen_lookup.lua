-- Reads namespace generations, starting the missing ones (the near-cache's
-- validation, for every request waiting together; see kv/coalesce.rs and
-- cache/near.rs). The usual read is a plain MGET; this runs when it found a
-- counter missing.
--
-- KEYS[1..n]    generation counters (hash tag {g}: one slot on Cluster)
-- ARGV[1]       lifetime of a counter created here, in milliseconds
-- Returns {gen1, …, genN}, as strings (they exceed what Lua numbers print
-- exactly).
--
-- A missing counter (never set, evicted under allkeys-lru, lost in a restart)
-- starts at the server time in microseconds, never at 0: counters only move
-- up by INCR, one per write, so a fresh start above every value the old
-- counter can have reached means entries cached under an old generation
-- (which may have survived the counter) are never served again, and a
-- rendered key never names two contents (the near-cache relies on it). The
-- same argument makes it safe to let counters expire (ARGV[1], refreshed by
-- every bump): namespaces nobody writes or reads any more (one per user) do
-- not pile up, and an expiry costs at most one round of misses.

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
return gens
