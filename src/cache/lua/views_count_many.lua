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

-- Each property's views are added with one HINCRBY (a batch often carries
-- many views of one hot property); the k-th of c views gets the count
-- after it, final - c + k, as c separate HINCRBYs would have answered.

local in_flight = redis.call('ZRANGE', KEYS[2], 0, -1)
local views = {}
local order = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if views[id] == nil then
    views[id] = 0
    order[#order + 1] = id
  end
  views[id] = views[id] + 1
end
local base = {}
for _, id in ipairs(order) do
  local n = redis.call('HINCRBY', KEYS[1], id, views[id])
  local f = 0
  for _, b in ipairs(in_flight) do
    f = f + tonumber(redis.call('HGET', ARGV[1] .. b, id) or '0')
  end
  -- the count before this call's views, flushing batches included
  base[id] = n - views[id] + f
end
local seen = {}
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  seen[id] = (seen[id] or 0) + 1
  out[#out + 1] = base[id] + seen[id]
end
return out
