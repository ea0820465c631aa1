-- The shown count of one property, seeded from the database when unknown,
-- after adding this call's views. See views/store.rs for the state.
--
-- KEYS[1]  pending counts (hash: property id -> views)
-- KEYS[2]  the round being flushed, not yet in batches (hash, may be absent)
-- KEYS[3]  ids of the batches in flight (sorted set)
-- KEYS[4]  shown counts (hash: property id -> count the detail shows)
-- KEYS[5]  epoch (integer string, bumped by every take and ack)
-- ARGV[1]  prefix of the batch keys (batch = prefix .. id; hash tag {v})
-- ARGV[2]  property id
-- ARGV[3]  views to add (0: read only, 1: count this view)
-- ARGV[4]  epoch the database was read at, '' when not read yet
-- ARGV[5]  the property's view_count in the database at that epoch
-- ARGV[6..] the in-flight batch ids the database had applied then
-- Returns {1, shown} or, when the count is unknown and ARGV[4] is not the
-- current epoch, {0, epoch, in-flight id, ...}: nothing was written; read
-- the database for those batches and call again.
--
-- Why the epoch check is enough: with no take and no ack since the
-- snapshot, the batches in flight are those the caller asked the database
-- about, and none of them was forgotten. A batch the database applied
-- after it was read is counted from its Redis copy, as it was not in the
-- count read; pending and draining are read here, so views counted
-- meanwhile are included.

local function add(views)
  if views ~= 0 then
    redis.call('HINCRBY', KEYS[1], ARGV[2], views)
    return redis.call('HINCRBY', KEYS[4], ARGV[2], views)
  end
  return tonumber(redis.call('HGET', KEYS[4], ARGV[2]))
end

local views = tonumber(ARGV[3])
if redis.call('HEXISTS', KEYS[4], ARGV[2]) == 1 then
  return {1, add(views)}
end
local epoch = redis.call('GET', KEYS[5]) or '0'
local in_flight = redis.call('ZRANGE', KEYS[3], 0, -1)
if ARGV[4] ~= epoch then
  local out = {0, tonumber(epoch)}
  for _, b in ipairs(in_flight) do
    out[#out + 1] = b
  end
  return out
end
local applied = {}
for i = 6, #ARGV do
  applied[ARGV[i]] = true
end
local n = tonumber(ARGV[5])
  + tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
  + tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
for _, b in ipairs(in_flight) do
  if not applied[b] then
    n = n + tonumber(redis.call('HGET', ARGV[1] .. b, ARGV[2]) or '0')
  end
end
redis.call('HSET', KEYS[4], ARGV[2], n)
return {1, add(views)}
