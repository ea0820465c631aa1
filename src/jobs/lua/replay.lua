-- Queues a dead job again with fresh attempts (its last error is kept until
-- it is overwritten), and wakes one idle worker.
--
-- KEYS[1] dead zset   KEYS[2] ready list   KEYS[3] the job's hash
-- KEYS[4] wake-up list
-- ARGV[1] job id
-- Returns 1, or 0 when the job is not dead (nothing changed).
if redis.call('HGET', KEYS[3], 'status') ~= 'dead' then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], 'status', 'queued', 'attempts', 0)
redis.call('HDEL', KEYS[3], 'worker', 'finished_ms')
redis.call('PERSIST', KEYS[3])
redis.call('LPUSH', KEYS[2], ARGV[1])
if redis.call('LLEN', KEYS[4]) == 0 then
  redis.call('LPUSH', KEYS[4], '1')
end
return 1
