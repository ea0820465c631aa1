-- Records the success of a job the worker still holds: status done, the
-- result, and an expiry on the hash (results are kept for a TTL).
--
-- KEYS[1] leases zset   KEYS[2] the job's hash
-- ARGV[1] job id        ARGV[2] worker id
-- ARGV[3] '1' if there is a result, else '0'    ARGV[4] result
-- ARGV[5] result TTL ms
-- Returns 1, or 0 when the worker no longer holds the job (nothing changed).
local f = redis.call('HMGET', KEYS[2], 'status', 'worker')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'status', 'done', 'finished_ms', now)
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[2], 'result', ARGV[4])
else
  redis.call('HDEL', KEYS[2], 'result')
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
