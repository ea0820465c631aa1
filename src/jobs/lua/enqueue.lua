-- Queues a batch of jobs: each job's hash, then its id on the ready list
-- (due now) or in the delayed set (due later); then wakes idle workers by
-- pushing up to one token per job on the wake-up list (never more than
-- ARGV[2] tokens in all: a token wakes one idle worker process, and the
-- workers pass a token on while ready jobs remain). Redis TIME is the
-- clock of every script, so workers' clocks do not matter.
--
-- Job hashes are ARGV[1] .. id. They are not declared in KEYS because the
-- batch is variable; every queue key shares the `{q}` hash tag, so on Redis
-- Cluster they are in the same slot as KEYS.
--
-- KEYS[1] ready list      KEYS[2] delayed zset      KEYS[3] wake-up list
-- ARGV[1] job hash key prefix   ARGV[2] most tokens on the wake-up list
-- then per job, 6 values: id, name, payload (JSON), max attempts,
--   lease timeout ms, run at (Unix ms)
-- Returns the number of jobs queued, or the index (negative, from -1) of the
-- first job whose id exists already (then nothing is queued).
local n = (#ARGV - 2) / 6
for i = 0, n - 1 do
  if redis.call('EXISTS', ARGV[1] .. ARGV[3 + i * 6]) == 1 then
    return -(i + 1)
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ready = {}
for i = 0, n - 1 do
  local b = 3 + i * 6
  local id, run_at = ARGV[b], tonumber(ARGV[b + 5])
  redis.call('HSET', ARGV[1] .. id, 'name', ARGV[b + 1], 'payload', ARGV[b + 2],
    'status', 'queued', 'attempts', 0, 'max_attempts', ARGV[b + 3],
    'timeout_ms', ARGV[b + 4], 'created_ms', now)
  if run_at <= now then
    ready[#ready + 1] = id
  else
    redis.call('ZADD', KEYS[2], run_at, id)
  end
end
for i = 1, #ready, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(ready, i, math.min(i + 999, #ready)))
end
local tokens = math.min(n, tonumber(ARGV[2]) - redis.call('LLEN', KEYS[3]))
if tokens > 0 then
  local t = {}
  for i = 1, tokens do t[i] = '1' end
  redis.call('LPUSH', KEYS[3], unpack(t))
end
return n
