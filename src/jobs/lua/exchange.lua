-- The worker's one step per round trip: records the outcomes of jobs the
-- worker holds, then leases it up to ARGV[3] due jobs. In order:
--   1. each outcome (only while the worker still holds that job's lease):
--      'done' (status done, result kept, the hash expires after the result
--      TTL), 'retry' (back to the delayed set at its retry time), 'dead'
--      (kept in the dead set until replayed) or 'release' (due at once, at
--      the head of the ready list, the attempt it used not counted);
--   2. delayed jobs whose time has come move to the head of the ready list;
--   3. leases that ran out (their worker died or hung) are taken back: the
--      job goes to the head of the ready list, or is dead if that delivery
--      was its last attempt (a job that kills its worker must not loop);
--   4. up to ARGV[3] ready ids are popped, each attempt counted, and each
--      job leased for ITS OWN timeout (score of the leases zset = deadline);
--   5. wake-ups: while ready jobs remain, one token stays on the wake-up
--      list so that another idle worker process wakes; when none remain,
--      stale tokens are dropped (an idle worker then sleeps undisturbed).
-- Steps 2 and 3 move at most ARGV[4] ids per call, so one call stays short
-- however large the backlog; the next calls move the rest.
--
-- Job hashes are ARGV[1] .. id. They are not declared in KEYS because the
-- ids are only known here; every queue key shares the `{q}` hash tag, so on
-- Redis Cluster they are in the same slot as KEYS.
--
-- KEYS[1] ready list   KEYS[2] delayed zset   KEYS[3] leases zset
-- KEYS[4] dead zset    KEYS[5] wake-up list
-- ARGV[1] job hash key prefix   ARGV[2] worker id   ARGV[3] jobs wanted
-- ARGV[4] most ids moved per step   ARGV[5] result TTL ms
-- then per outcome, 4 values: id, kind ('done', 'retry', 'dead' or
--   'release'), text (result or error), number ('1' if there is a result;
--   the retry time in Unix ms)
-- Returns {held, leased, next_due}: held = 1/0 per outcome (0: the worker no
-- longer held the job, nothing changed); leased = {id, payload, attempt,
-- max_attempts, timeout_ms} per job; next_due = ms until the earliest
-- delayed job or lease deadline, or -1 when there is none (or when the
-- worker got every job it asked for: it asks again anyway).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, worker = ARGV[1], ARGV[2]

local held, settled = {}, {}
for b = 6, #ARGV, 4 do
  local id, kind, text, num = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'status', 'worker')
  if f[1] ~= 'running' or f[2] ~= worker then
    held[#held + 1] = 0
  else
    held[#held + 1] = 1
    settled[#settled + 1] = id
    if kind == 'done' then
      if num == '1' then
        redis.call('HSET', key, 'status', 'done', 'finished_ms', now, 'result', text)
      else
        redis.call('HSET', key, 'status', 'done', 'finished_ms', now)
        redis.call('HDEL', key, 'result')
      end
      redis.call('PEXPIRE', key, ARGV[5])
    elseif kind == 'retry' then
      redis.call('HSET', key, 'status', 'queued', 'last_error', text)
      redis.call('ZADD', KEYS[2], tonumber(num), id)
    elseif kind == 'dead' then
      redis.call('HSET', key, 'status', 'dead', 'last_error', text, 'finished_ms', now)
      redis.call('ZADD', KEYS[4], now, id)
    else
      redis.call('HINCRBY', key, 'attempts', -1)
      redis.call('HSET', key, 'status', 'queued')
      redis.call('HDEL', key, 'worker')
      redis.call('RPUSH', KEYS[1], id)
    end
  end
end

-- Their leases end (one ZREM for the batch: fewer calls per job).
for i = 1, #settled, 1000 do
  redis.call('ZREM', KEYS[3], unpack(settled, i, math.min(i + 999, #settled)))
end

local batch = tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, batch)
for i = #due, 1, -1 do
  redis.call('ZREM', KEYS[2], due[i])
  redis.call('RPUSH', KEYS[1], due[i])
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[3], id)
  local key = prefix .. id
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
local leased = {}
local want = tonumber(ARGV[3])
if want > 0 then
  local ids = redis.call('RPOP', KEYS[1], want)
  if ids then
    local scores = {}
    for _, id in ipairs(ids) do
      local key = prefix .. id
      local f = redis.call('HMGET', key, 'status', 'payload', 'max_attempts', 'timeout_ms',
        'attempts')
      if f[1] == 'queued' then
        local attempt = tonumber(f[5]) + 1
        local timeout = tonumber(f[4])
        redis.call('HSET', key, 'status', 'running', 'worker', worker, 'attempts', attempt)
        scores[#scores + 1] = now + timeout
        scores[#scores + 1] = id
        leased[#leased + 1] = {id, f[2], attempt, tonumber(f[3]), timeout}
      end
    end
    if #scores > 0 then
      redis.call('ZADD', KEYS[3], unpack(scores))
    end
  end
end

if redis.call('LLEN', KEYS[1]) > 0 then
  if redis.call('LLEN', KEYS[5]) == 0 then
    redis.call('LPUSH', KEYS[5], '1')
  end
else
  redis.call('DEL', KEYS[5])
end

-- Only a worker that got fewer jobs than it asked for needs to know when
-- to look again.
local next_due = -1
if #leased >= want then
  return {held, leased, next_due}
end
for _, k in ipairs({KEYS[2], KEYS[3]}) do
  local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  if first[2] then
    local d = math.max(0, tonumber(first[2]) - now)
    if next_due < 0 or d < next_due then
      next_due = d
    end
  end
end
return {held, leased, next_due}
