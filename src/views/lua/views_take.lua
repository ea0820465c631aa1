-- Takes a batch of view counts to write to the database: the oldest batch
-- still in flight (a flush that crashed, or one running right now, is
-- retried with the SAME id; the database applies each id once); else up to
-- ARGV[3] properties of the round being flushed (draining); else, when
-- ARGV[4] is '1', a new round: every pending count moved to draining in
-- O(1) (RENAME), then its first batch.
--
-- KEYS[1]  pending counts (hash: property id -> views)
-- KEYS[2]  ids of the batches in flight (sorted set, scored by take time)
-- KEYS[3]  the key the new batch would get (ARGV[1] .. ARGV[2])
-- KEYS[4]  the round being flushed (hash: property id -> views)
-- KEYS[5]  epoch (bumped when a batch is made; see views_seed.lua)
-- ARGV[1]  prefix of the batch keys (hash tag {v}, one slot with KEYS)
-- ARGV[2]  id for a new batch
-- ARGV[3]  most properties in a new batch
-- ARGV[4]  '1' to start a new round when nothing is left of the last one
-- Returns {id, property, views, property, views, …}, or nil when there is
-- nothing to flush.
--
-- Cost: one new batch moves about ARGV[3] fields (HSCAN from the start of
-- draining, whose taken fields are deleted each time), so a flush of N
-- properties is N / ARGV[3] calls of bounded size, whatever N is.
-- Counts only ever travel pending -> draining -> batch -> database as
-- deltas: losing a key to eviction can lose views not yet flushed, never
-- lower or repeat a count already in the database.

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
  redis.call('INCR', KEYS[5])
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  if ARGV[4] ~= '1' or redis.call('EXISTS', KEYS[1]) == 0 then
    return false
  end
  redis.call('RENAME', KEYS[1], KEYS[4])
end
local max = tonumber(ARGV[3])
local fields = {}
local cursor = '0'
repeat
  local page = redis.call('HSCAN', KEYS[4], cursor, 'COUNT', max)
  cursor = page[1]
  local kv = page[2]
  for i = 1, #kv, 2 do
    if #fields >= 2 * max then
      break
    end
    fields[#fields + 1] = kv[i]
    fields[#fields + 1] = kv[i + 1]
  end
until cursor == '0' or #fields >= 2 * max
if #fields == 0 then
  redis.call('DEL', KEYS[4])
  return false
end
-- HSCAN may return a field twice; HSET keeps one copy of the same value.
redis.call('HSET', KEYS[3], unpack(fields))
for i = 1, #fields, 2 do
  redis.call('HDEL', KEYS[4], fields[i])
end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])), ARGV[2])
redis.call('INCR', KEYS[5])
local batch = redis.call('HGETALL', KEYS[3])
table.insert(batch, 1, ARGV[2])
return batch
