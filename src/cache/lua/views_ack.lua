-- Forgets a view batch once the database has applied it.
--
-- KEYS[1]  ids of the batches in flight (sorted set)
-- KEYS[2]  the batch (hash)
-- ARGV[1]  the batch id
-- Returns 1.

redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
