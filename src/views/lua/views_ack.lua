-- Forgets a view batch once the database has applied it.
--
-- KEYS[1]  ids of the batches in flight (sorted set)
-- KEYS[2]  the batch (hash)
-- KEYS[3]  epoch (bumped: a seed that saw this batch in flight must not
--          land, see views_seed.lua)
-- ARGV[1]  the batch id
-- Returns 1.

redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('INCR', KEYS[3])
return 1
