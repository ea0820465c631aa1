-- The worker's one step per round trip on one partition: records the
-- outcomes of jobs the worker holds, then leases it up to ARGV[3] due jobs.
-- (record.lua is prepended.) In order:
--   1. each outcome (only while the worker still holds that job's lease,
--      i.e. is its value in the running hash): 'done' without a result
--      (the record is deleted: nothing is kept of a finished job without a
--      result), 'done' with one (status done, the result kept for the
--      result TTL), 'retry' (back to the delayed set at its retry time),
--      'dead' (kept in the dead set until replayed) or 'release' (due at
--      once, at the head of the ready list, the attempt not counted);
--   2. delayed jobs whose time has come move to the head of the ready list;
--   3. leases that ran out (their worker died or hung) are taken back: the
--      job goes to the head of the ready list, or is dead if that delivery
--      was its last attempt (a job that kills its worker must not loop);
--   4. up to ARGV[3] ready ids are popped, and each job leased for ITS OWN
--      timeout (score of the leases zset = deadline; running hash = owner);
--   5. wake-ups: while ready jobs remain, one token stays on the wake-up
--      list so that another idle worker process wakes; when none remain,
--      stale tokens are dropped (an idle worker then sleeps undisturbed).
-- Steps 2 and 3 move at most ARGV[4] ids per call, so one call stays short
-- however large the backlog; the next calls move the rest.
--
-- Per job, the hot path costs a share of a few multi-key commands (HMGET,
-- HDEL, ZREM, DEL of the outcomes; RPOP, MGET, HSET, ZADD of the lease),
-- not commands of its own: records are only parsed for retries, deaths,
-- results and lapsed leases.
--
-- Records are ARGV[1] .. id. They are not declared in KEYS because the
-- ids are only known here; every key of a partition shares its hash tag, so
-- on Redis Cluster they are in the same slot as KEYS.
--
-- KEYS[1] ready list   KEYS[2] delayed zset   KEYS[3] leases zset
-- KEYS[4] running hash KEYS[5] dead zset      KEYS[6] wake-up list
-- ARGV[1] record key prefix   ARGV[2] worker id   ARGV[3] jobs wanted
-- ARGV[4] most ids moved per step   ARGV[5] result TTL ms
-- ARGV[6] '1': report next_due even when the worker got every job it asked
--   for (a worker of several partitions keeps each one's due time)
-- then per outcome, 4 values: id, kind ('done', 'retry', 'dead' or
--   'release'), text (result or error), number ('1' if there is a result;
--   the retry time in Unix ms)
-- Returns {held, leased, next_due, ready}: held = 1/0 per outcome (0: the
-- worker no longer held the job, nothing changed); leased = {id, record}
-- per job; next_due = ms until the earliest delayed job or lease deadline,
-- or -1 when there is none (or when the worker got every job it asked for
-- and ARGV[6] is not '1': it asks again anyway); ready = the ready jobs
-- left, by which a worker of several partitions stays with this one
-- (src/jobs/redis.rs, "Partitions").
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, worker = ARGV[1], ARGV[2]

local held = {}
if #ARGV >= 7 then
  local ids = {}
  for b = 7, #ARGV, 4 do
    ids[#ids + 1] = ARGV[b]
  end
  local owners = redis.call('HMGET', KEYS[4], unpack(ids))
  local settled, gone, back = {}, {}, {}
  for i, id in ipairs(ids) do
    local b = 3 + i * 4
    local kind, text, num = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
    if owners[i] ~= worker then
      held[i] = 0
    else
      held[i] = 1
      settled[#settled + 1] = id
      local key = prefix .. id
      if kind == 'done' and num ~= '1' then
        gone[#gone + 1] = key
      elseif kind == 'release' then
        back[#back + 1] = id
      else
        local r = load(key)
        if r then
          r.attempts = r.attempts + 1
          r.worker = worker
          if kind == 'done' then
            r.status, r.res, r.finished, r.payload = 'd', text, now, ''
            redis.call('SET', key, encode(r), 'PX', ARGV[5])
          elseif kind == 'retry' then
            r.status, r.err = 'q', text
            redis.call('SET', key, encode(r))
            redis.call('ZADD', KEYS[2], tonumber(num), id)
          else
            r.status, r.err, r.finished = 'x', text, now
            redis.call('SET', key, encode(r))
            redis.call('ZADD', KEYS[5], now, id)
          end
        end
      end
    end
  end
  if #settled > 0 then
    redis.call('HDEL', KEYS[4], unpack(settled))
    redis.call('ZREM', KEYS[3], unpack(settled))
  end
  if #gone > 0 then
    redis.call('DEL', unpack(gone))
  end
  if #back > 0 then
    redis.call('RPUSH', KEYS[1], unpack(back))
  end
end

local batch = tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, batch)
if #due > 0 then
  redis.call('ZREM', KEYS[2], unpack(due))
  -- The earliest due is popped first (RPOP takes the last pushed).
  local rev = {}
  for i = #due, 1, -1 do
    rev[#rev + 1] = due[i]
  end
  redis.call('RPUSH', KEYS[1], unpack(rev))
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, batch)
if #expired > 0 then
  redis.call('ZREM', KEYS[3], unpack(expired))
  local owners = redis.call('HMGET', KEYS[4], unpack(expired))
  redis.call('HDEL', KEYS[4], unpack(expired))
  for i, id in ipairs(expired) do
    local key = prefix .. id
    local r = load(key)
    if r and r.status == 'q' and (owners[i] or r.was_running) then
      r.attempts = r.attempts + 1
      r.worker = owners[i] or r.worker
      if r.attempts >= r.max then
        r.status, r.finished = 'x', now
        r.err = 'lease expired: the worker was lost on the last attempt'
        redis.call('SET', key, encode(r))
        redis.call('ZADD', KEYS[5], now, id)
      else
        redis.call('SET', key, encode(r))
        redis.call('RPUSH', KEYS[1], id)
      end
    end
  end
end

-- Ids whose record vanished or is not queued (never expected) are skipped.
local leased = {}
local want = tonumber(ARGV[3])
if want > 0 then
  local ids = redis.call('RPOP', KEYS[1], want)
  if ids then
    local keys = {}
    for i, id in ipairs(ids) do
      keys[i] = prefix .. id
    end
    local recs = redis.call('MGET', unpack(keys))
    local owners, deadlines = {}, {}
    for i, id in ipairs(ids) do
      local rec = recs[i]
      if not rec then
        -- Missing, or a record of the previous version (a hash): load()
        -- rewrites the latter.
        local r = load(keys[i])
        if r then
          rec = encode(r)
        end
      end
      local timeout = rec and string.match(rec, '^q|(%d+)|')
      if timeout then
        owners[#owners + 1] = id
        owners[#owners + 1] = worker
        deadlines[#deadlines + 1] = now + tonumber(timeout)
        deadlines[#deadlines + 1] = id
        leased[#leased + 1] = {id, rec}
      end
    end
    if #owners > 0 then
      redis.call('HSET', KEYS[4], unpack(owners))
      redis.call('ZADD', KEYS[3], unpack(deadlines))
    end
  end
end

local ready = redis.call('LLEN', KEYS[1])
if ready > 0 then
  if redis.call('LLEN', KEYS[6]) == 0 then
    redis.call('LPUSH', KEYS[6], '1')
  end
else
  redis.call('DEL', KEYS[6])
end

-- Only a worker that got fewer jobs than it asked for needs to know when
-- to look again.
local next_due = -1
if #leased >= want and ARGV[6] ~= '1' then
  return {held, leased, next_due, ready}
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
return {held, leased, next_due, ready}
