-- Takes a batch of view counts to write to the database: the oldest batch
-- still in flight (a flush that crashed, or one running right now, is
-- retried with the SAME id; the database applies each id once); else about
-- ARGV[3] properties of the round being flushed (draining); else, when
-- ARGV[4] is '1', a new round: every pending count moved to draining in
-- O(1) (RENAME), then its first batch.
--
-- KEYS[1]  pending counts (hash: property id -> views)
-- KEYS[2]  ids of the batches in flight (sorted set, scored by take time)
-- KEYS[3]  the key the new batch would get (ARGV[1] .. ARGV[2])
-- KEYS[4]  the round being flushed (hash: property id -> views)
-- KEYS[5]  epoch (bumped when a batch is made; see views_seed.lua)
-- KEYS[6]  HSCAN cursor of the round (where the next batch starts)
-- ARGV[1]  prefix of the batch keys (hash tag {v}, one slot with KEYS)
-- ARGV[2]  id for a new batch
-- ARGV[3]  properties to gather for a new batch (it may hold one HSCAN
--          page more: pages are asked for a tenth of this, so about 10 %)
-- ARGV[4]  '1' to start a new round when nothing is left of the last one
-- Returns {id, property, views, property, views, …}, or nil when there is
-- nothing to flush.
--
-- Cost: a batch continues the round's HSCAN where the last one stopped
-- (KEYS[6]), so each call visits about ARGV[3] entries whatever the size of
-- the round (scanning from the start each time walked past every bucket
-- emptied before: 20 ms a batch at 100,000). A field taken is set to 0, not
-- deleted: deleting shrinks the hash table, and scanning a table that is
-- being rehashed visits both tables (11 ms a batch at 1,000,000); a 0 adds
-- nothing where the shown count is seeded (views_seed.lua). SCAN returns
-- every field present for a whole cycle, so once the cursor is back at 0
-- the round is done and its hash is UNLINKed (freed off the main thread).
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
  redis.call('DEL', KEYS[6])
end
local max = tonumber(ARGV[3])
local page_size = math.max(1, math.floor(max / 10))
local fields = {}
local cursor = redis.call('GET', KEYS[6]) or '0'
repeat
  local page = redis.call('HSCAN', KEYS[4], cursor, 'COUNT', page_size)
  cursor = page[1]
  local kv = page[2]
  for i = 1, #kv, 2 do
    -- 0: taken by an earlier batch (or seen twice by HSCAN in this one).
    if kv[i + 1] ~= '0' then
      fields[#fields + 1] = kv[i]
      fields[#fields + 1] = kv[i + 1]
      redis.call('HSET', KEYS[4], kv[i], 0)
    end
  end
until cursor == '0' or #fields >= 2 * max
if cursor == '0' then
  redis.call('UNLINK', KEYS[4])
  redis.call('DEL', KEYS[6])
else
  redis.call('SET', KEYS[6], cursor)
end
if #fields == 0 then
  return false
end
-- In slices: Lua's unpack has a bound on the values it can pass.
for i = 1, #fields, 1000 do
  redis.call('HSET', KEYS[3], unpack(fields, i, math.min(i + 999, #fields)))
end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])), ARGV[2])
redis.call('INCR', KEYS[5])
local batch = redis.call('HGETALL', KEYS[3])
table.insert(batch, 1, ARGV[2])
return batch
