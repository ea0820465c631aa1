-- Records the failure of a job the worker still holds: with a retry time it
-- waits in the delayed set (reserve moves it back when due), without one it
-- is dead (kept, with its last error, until replayed).
--
-- KEYS[1] leases zset   KEYS[2] delayed zset   KEYS[3] dead zset   KEYS[4] the job's hash
-- ARGV[1] job id        ARGV[2] worker id      ARGV[3] error
-- ARGV[4] retry at (Unix ms), or '' for dead
-- Returns 1, or 0 when the worker no longer holds the job (nothing changed).
local f = redis.call('HMGET', KEYS[4], 'status', 'worker')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[4], 'status', 'queued', 'last_error', ARGV[3])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[1])
else
  redis.call('HSET', KEYS[4], 'status', 'dead', 'last_error', ARGV[3], 'finished_ms', now)
  redis.call('ZADD', KEYS[3], now, ARGV[1])
end
return 1
