-- Counts many views in one call (the views of every detail request waiting
-- together, see kv/coalesce.rs), and returns for each the views of that
-- property not yet in the database: pending plus every batch being flushed,
-- as views_count.lua does for one.
--
-- KEYS[1]     pending counts (hash: property id -> views)
-- KEYS[2]     ids of the batches in flight (sorted set)
-- ARGV[1]     prefix of the batch keys (batch = prefix .. id; same hash tag
--             {v} as KEYS, so one slot)
-- ARGV[2..]   one property id per view, in arrival order
-- Returns one integer per view: the count right after that view.

local in_flight = redis.call('ZRANGE', KEYS[2], 0, -1)
local flushing = {}
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local n = redis.call('HINCRBY', KEYS[1], id, 1)
  if flushing[id] == nil then
    local f = 0
    for _, b in ipairs(in_flight) do
      f = f + tonumber(redis.call('HGET', ARGV[1] .. b, id) or '0')
    end
    flushing[id] = f
  end
  out[#out + 1] = n + flushing[id]
end
return out
