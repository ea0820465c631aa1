-- Takes a batch of view counts to write to the database: the oldest batch
-- still in flight (a flush that crashed, or one running right now, is
-- retried with the SAME id; the database applies each id once), else every
-- pending count, moved atomically to a new batch.
--
-- KEYS[1]  pending counts (hash: property id -> views)
-- KEYS[2]  ids of the batches in flight (sorted set, scored by take time)
-- KEYS[3]  the key the new batch would get (ARGV[1] .. ARGV[2])
-- ARGV[1]  prefix of the batch keys (hash tag {v}, one slot with KEYS)
-- ARGV[2]  id for a new batch
-- Returns {id, property, views, property, views, …}, or nil when there is
-- nothing to flush.
--
-- Counts only ever travel pending -> batch -> database as deltas: losing a
-- key to eviction can lose views not yet flushed, never lower or repeat a
-- count already in the database.

while true do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then
    break
  end
  local batch = redis.call('HGETALL', ARGV[1] .. oldest)
  if #batch > 0 then
    table.insert(batch, 1, oldest)
    return batch
  end
  -- The batch was evicted: nothing of it is left to apply.
  redis.call('ZREM', KEYS[2], oldest)
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
redis.call('RENAME', KEYS[1], KEYS[3])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])), ARGV[2])
local batch = redis.call('HGETALL', KEYS[3])
table.insert(batch, 1, ARGV[2])
return batch
