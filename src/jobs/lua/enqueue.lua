-- Queues one job: its hash, then its id on the ready list (due now) or in
-- the delayed set (due later). Redis TIME is the clock of every script, so
-- workers' clocks do not matter.
--
-- KEYS[1] ready list      KEYS[2] delayed zset      KEYS[3] the job's hash
-- ARGV[1] job id          ARGV[2] job name          ARGV[3] payload (JSON)
-- ARGV[4] max attempts    ARGV[5] lease timeout ms  ARGV[6] run at (Unix ms)
-- Returns 1, or 0 when a job with this id exists (nothing is changed).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
local run_at = tonumber(ARGV[6])
redis.call('HSET', KEYS[3], 'name', ARGV[2], 'payload', ARGV[3], 'status', 'queued',
  'attempts', 0, 'max_attempts', ARGV[4], 'timeout_ms', ARGV[5], 'created_ms', now)
if run_at <= now then
  redis.call('LPUSH', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[2], run_at, ARGV[1])
end
return 1
