-- Gives back a job the worker still holds (it is shutting down before the
-- job finished): due at once, at the head of the ready list, and the
-- attempt it used is not counted.
--
-- KEYS[1] leases zset   KEYS[2] ready list   KEYS[3] the job's hash
-- ARGV[1] job id        ARGV[2] worker id
-- Returns 1, or 0 when the worker no longer holds the job (nothing changed).
local f = redis.call('HMGET', KEYS[3], 'status', 'worker')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'attempts', -1)
redis.call('HSET', KEYS[3], 'status', 'queued')
redis.call('HDEL', KEYS[3], 'worker')
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
