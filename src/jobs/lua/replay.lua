-- Queues a dead job again with fresh attempts (its last error is kept until
-- it is overwritten), and wakes one idle worker. (record.lua is prepended.)
--
-- KEYS[1] dead zset   KEYS[2] ready list   KEYS[3] the job's record
-- KEYS[4] wake-up list
-- ARGV[1] job id
-- Returns 1, or 0 when the job is not dead (nothing changed).
local r = load(KEYS[3])
if not r or r.status ~= 'x' then
  return 0
end
r.status, r.attempts, r.worker, r.finished = 'q', 0, nil, 0
redis.call('SET', KEYS[3], encode(r))
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[1])
if redis.call('LLEN', KEYS[4]) == 0 then
  redis.call('LPUSH', KEYS[4], '1')
end
return 1
