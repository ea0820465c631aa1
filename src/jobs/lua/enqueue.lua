-- Queues a batch of jobs of one partition: each job's record (one string,
-- all of them in one MSETNX, which sets none if any id exists already),
-- then its id on the ready list (due now) or in the delayed set (due
-- later); then wakes idle workers by pushing up to one token per job on the
-- partition's wake-up list (never more than ARGV[2] tokens in all: a token
-- wakes one idle worker process, and the workers pass a token on while
-- ready jobs remain). Redis TIME is the clock of every script, so workers'
-- clocks do not matter.
--
-- Records are ARGV[1] .. id. They are not declared in KEYS because the
-- batch is variable; every key of a partition shares its hash tag, so on
-- Redis Cluster they are in the same slot as KEYS.
--
-- KEYS[1] ready list      KEYS[2] delayed zset      KEYS[3] wake-up list
-- ARGV[1] record key prefix   ARGV[2] most tokens on the wake-up list
-- then per job, 3 values: id, record (src/jobs/lua/record.lua), run at (Unix ms)
-- Returns the number of jobs queued, or the index (negative, from -1) of the
-- first job whose id exists already (then nothing is queued).
local n = (#ARGV - 2) / 3
if n < 1 then
  return 0
end
local kv = {}
for i = 0, n - 1 do
  kv[#kv + 1] = ARGV[1] .. ARGV[3 + i * 3]
  kv[#kv + 1] = ARGV[4 + i * 3]
end
if redis.call('MSETNX', unpack(kv)) == 0 then
  for i = 0, n - 1 do
    if redis.call('EXISTS', kv[2 * i + 1]) == 1 then
      return -(i + 1)
    end
  end
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ready, later = {}, {}
for i = 0, n - 1 do
  local id, run_at = ARGV[3 + i * 3], tonumber(ARGV[5 + i * 3])
  if run_at <= now then
    ready[#ready + 1] = id
  else
    later[#later + 1] = run_at
    later[#later + 1] = id
  end
end
if #ready > 0 then
  redis.call('LPUSH', KEYS[1], unpack(ready))
end
if #later > 0 then
  redis.call('ZADD', KEYS[2], unpack(later))
end
local tokens = math.min(n, tonumber(ARGV[2]) - redis.call('LLEN', KEYS[3]))
if tokens > 0 then
  local w = {}
  for i = 1, tokens do w[i] = '1' end
  redis.call('LPUSH', KEYS[3], unpack(w))
end
return n
