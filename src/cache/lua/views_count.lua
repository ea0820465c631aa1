-- Counts a view (or just reads), and returns the views of that property not
-- yet in the database: pending plus every batch being flushed.
--
-- KEYS[1]  pending counts (hash: property id -> views)
-- KEYS[2]  ids of the batches in flight (sorted set)
-- ARGV[1]  property id
-- ARGV[2]  views to add (1 to count a view, 0 to read)
-- ARGV[3]  prefix of the batch keys (batch = prefix .. id; same hash tag
--          {v} as KEYS, so one slot)
-- Returns the not-yet-flushed views (integer).
--
-- Usually nothing is in flight, so this is one HINCRBY and one empty ZRANGE.

local n
if tonumber(ARGV[2]) > 0 then
  n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
else
  n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  n = n + tonumber(redis.call('HGET', ARGV[3] .. id, ARGV[1]) or '0')
end
return n
