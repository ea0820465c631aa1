-- Counts many views in one call (the views of every detail request waiting
-- together, see kv/coalesce.rs), each only for a property whose shown count
-- is known: an unknown id (never seeded, or a property that does not exist)
-- writes nothing and creates no key.
--
-- KEYS[1]     pending counts (hash: property id -> views)
-- KEYS[2]     shown counts (hash: property id -> count the detail shows)
-- ARGV[1..]   one property id per view, in arrival order
-- Returns one integer per view: the shown count right after that view, or
-- -1 when the property's shown count is not known (the caller seeds it).

-- Each property's views are added with one HINCRBY per hash (a call often
-- carries many views of one hot property); the k-th of c views gets the
-- count after it, final - c + k, as c separate calls would have answered.

local views = {}
local order = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  if views[id] == nil then
    views[id] = 0
    order[#order + 1] = id
  end
  views[id] = views[id] + 1
end
local base = {}
for _, id in ipairs(order) do
  if redis.call('HEXISTS', KEYS[2], id) == 1 then
    redis.call('HINCRBY', KEYS[1], id, views[id])
    base[id] = redis.call('HINCRBY', KEYS[2], id, views[id]) - views[id]
  end
end
local seen = {}
local out = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  if base[id] == nil then
    out[#out + 1] = -1
  else
    seen[id] = (seen[id] or 0) + 1
    out[#out + 1] = base[id] + seen[id]
  end
end
return out
