-- Job records, shared by the scripts that read or rewrite one (this file is
-- prepended to them). A record is ONE string (src/jobs/record.rs writes and
-- reads the same format):
--
--   status|timeout_ms|attempts|max_attempts|created_ms|finished_ms|name|wl|el|rl|
--   then the worker (wl bytes), the last error (el), the result (rl), the payload
--
-- status: q (queued, also while running: a job runs while its id is a field
-- of the partition's `running` hash), d (done), x (dead). attempts counts
-- finished deliveries (a running delivery is attempts + 1). wl, el, rl are
-- byte lengths, or n when the value is absent. The hot paths never parse a
-- record in Lua: a lease only reads the timeout at its head, and a job done
-- without a result just deletes it.

local RECORD = '^(%a)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|([^|]*)|([n%d]+)|([n%d]+)|([n%d]+)|()'

local function decode(rec)
  local s, t, a, m, c, f, name, wl, el, rl, pos = string.match(rec, RECORD)
  if not s then
    return nil
  end
  local function take(len)
    if len == 'n' then
      return nil
    end
    local v = string.sub(rec, pos, pos + tonumber(len) - 1)
    pos = pos + tonumber(len)
    return v
  end
  local r = {status = s, timeout = t, attempts = tonumber(a), max = tonumber(m),
    created = c, finished = f, name = name}
  r.worker = take(wl)
  r.err = take(el)
  r.res = take(rl)
  r.payload = string.sub(rec, pos)
  return r
end

local function len_of(v)
  if v then
    return #v
  end
  return 'n'
end

local function encode(r)
  return table.concat({r.status, r.timeout, r.attempts, r.max, r.created, r.finished, r.name,
    len_of(r.worker), len_of(r.err), len_of(r.res),
    (r.worker or '') .. (r.err or '') .. (r.res or '') .. r.payload}, '|')
end

-- The record at `key`, decoded; nil if there is none. A job queued by the
-- version before string records is a hash: it is rewritten as a record here
-- (its TTL kept), so that every later step reads one format. A hash that
-- was running under an old worker comes back with was_running set and the
-- delivery it was in not counted (the caller decides what its lapse means).
local function load(key)
  local rec = redis.pcall('GET', key)
  if type(rec) == 'string' then
    return decode(rec)
  end
  if type(rec) ~= 'table' or not rec.err then
    return nil
  end
  local h = redis.call('HMGET', key, 'status', 'name', 'payload', 'attempts', 'max_attempts',
    'timeout_ms', 'created_ms', 'finished_ms', 'worker', 'last_error', 'result')
  if not h[1] then
    return nil
  end
  local r = {status = ({done = 'd', dead = 'x'})[h[1]] or 'q', name = h[2] or '',
    payload = h[3] or '', attempts = tonumber(h[4]) or 0, max = tonumber(h[5]) or 1,
    timeout = h[6] or '30000', created = h[7] or '0', finished = h[8] or '0',
    worker = h[9] or nil, err = h[10] or nil, res = h[11] or nil}
  if h[1] == 'running' then
    r.attempts = math.max(0, r.attempts - 1)
    r.was_running = true
  end
  local ttl = redis.call('PTTL', key)
  redis.call('DEL', key)
  if ttl > 0 then
    redis.call('SET', key, encode(r), 'PX', ttl)
  else
    redis.call('SET', key, encode(r))
  end
  return r
end

