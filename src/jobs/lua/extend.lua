-- Extends the lease of a job the worker still holds.
--
-- KEYS[1] leases zset   KEYS[2] running hash (id -> worker)
-- ARGV[1] job id        ARGV[2] worker id       ARGV[3] lease timeout ms
-- Returns 1, or 0 when the worker no longer holds the job.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
