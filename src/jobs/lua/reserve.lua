-- Leases the next due job to a worker, in one atomic step:
--   1. delayed jobs whose time has come move to the head of the ready list;
--   2. leases that ran out (their worker died or hung) are taken back: the
--      job goes to the head of the ready list, or is dead if that delivery
--      was its last attempt (a job that kills its worker must not loop);
--   3. the next ready id is popped, its attempt counted, and it is leased
--      for ITS OWN timeout (score of the leases zset = deadline).
-- Steps 1 and 2 move at most ARGV[3] ids per call, so one call stays short
-- however large the backlog; the next calls move the rest.
--
-- Job hashes are ARGV[1] .. id. They are not declared in KEYS because the
-- ids are only known here; every queue key shares the `{q}` hash tag, so on
-- Redis Cluster they are in the same slot as KEYS.
--
-- KEYS[1] ready list   KEYS[2] delayed zset   KEYS[3] leases zset   KEYS[4] dead zset
-- ARGV[1] job hash key prefix   ARGV[2] worker id   ARGV[3] batch size
-- Returns {id, payload, attempt, max_attempts, timeout_ms} or nil.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local batch = tonumber(ARGV[3])

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, batch)
for i = #due, 1, -1 do
  redis.call('ZREM', KEYS[2], due[i])
  redis.call('RPUSH', KEYS[1], due[i])
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[3], id)
  local key = ARGV[1] .. id
  local f = redis.call('HMGET', key, 'status', 'attempts', 'max_attempts')
  if f[1] == 'running' then
    if tonumber(f[2]) >= tonumber(f[3]) then
      redis.call('HSET', key, 'status', 'dead', 'finished_ms', now,
        'last_error', 'lease expired: the worker was lost on the last attempt')
      redis.call('ZADD', KEYS[4], now, id)
    else
      redis.call('HSET', key, 'status', 'queued')
      redis.call('RPUSH', KEYS[1], id)
    end
  end
end

-- Ids whose hash vanished or is not queued (never expected) are skipped.
for _ = 1, 16 do
  local id = redis.call('RPOP', KEYS[1])
  if not id then
    return nil
  end
  local key = ARGV[1] .. id
  if redis.call('HGET', key, 'status') == 'queued' then
    local attempt = redis.call('HINCRBY', key, 'attempts', 1)
    local f = redis.call('HMGET', key, 'payload', 'max_attempts', 'timeout_ms')
    local timeout = tonumber(f[3])
    redis.call('HSET', key, 'status', 'running', 'worker', ARGV[2])
    redis.call('ZADD', KEYS[3], now + timeout, id)
    return {id, f[1], attempt, tonumber(f[2]), timeout}
  end
end
return nil
