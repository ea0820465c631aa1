-- GCRA check-and-count of one key per request, for every request waiting
-- together (kv/coalesce.rs) in one round trip, atomic across every API
-- instance. Mirrors `gcra::check` in src/ratelimit/gcra.rs line by line
-- (same arithmetic, same decision), with the Redis server's `TIME` as the
-- clock so that clock skew between instances does not matter. Requests are
-- decided in order, so several on one key count exactly as separate calls.
--
-- KEYS[i]        the limiter key of request i (`{prefix}rl:{scope}:{subject}`);
--                its value is the theoretical arrival time (TAT) in Unix
--                microseconds. Repeats allowed. On Redis Cluster the caller
--                groups requests by hash slot first.
-- ARGV[2i-1]     limit of request i: requests admitted per period (an integer
--                >= 0; 0 counts as 1 for the spacing, as in gcra.rs)
-- ARGV[2i]       period of request i in microseconds (an integer >= 0)
--
-- Returns {allowed (1|0), remaining, reset_after_us, retry_after_us} per
-- request, flattened (4 integers each).
-- The key expires when the TAT passes: an idle key holds no information.
-- Each distinct key is read once and written once per call, whatever the
-- number of its requests (one client behind a NAT, a user's tabs): the
-- decisions are the same as with a GET and a SET per request, since nothing
-- else runs between them inside a script.
-- Needs Redis >= 5 (scripts are replicated by effects, so TIME may precede
-- a write). All values stay below 2^53, exact in Lua's doubles.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- key -> stored TAT (false: none) as of this call's decisions so far.
local tats = {}
-- keys whose TAT this call moved, in first-write order (and as a set).
local moved, written = {}, {}

local function check(key, limit, period)
  local limit_i = math.max(limit, 1)
  local interval = math.max(math.floor(period / limit_i), 1)
  local stored = tats[key]
  if stored == nil then
    stored = tonumber(redis.call('GET', key) or '') or false
    tats[key] = stored
  end
  local tat = math.max(stored or now, now)
  local new_tat = tat + interval
  local allow_at = new_tat - period

  if now < allow_at then
    return 0, 0, tat - now, allow_at - now
  end

  -- new_tat - now <= period here, so the numerator is >= 0 and floor is the
  -- same as Rust's truncating division.
  local remaining = math.floor((period - (new_tat - now)) / interval)
  remaining = math.min(math.max(remaining, 0), limit_i)
  if not written[key] then
    written[key] = true
    moved[#moved + 1] = key
  end
  tats[key] = new_tat
  return 1, remaining, new_tat - now, 0
end

local out = {}
for i, key in ipairs(KEYS) do
  local a, r, reset, retry = check(key, tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i]))
  out[#out + 1] = a
  out[#out + 1] = r
  out[#out + 1] = reset
  out[#out + 1] = retry
end
for _, key in ipairs(moved) do
  local tat = tats[key]
  local ttl_ms = math.ceil((tat - now) / 1000)
  -- %d, not tostring: Lua would print a 16-digit number as 1.7e+15.
  redis.call('SET', key, string.format('%d', tat), 'PX', string.format('%d', ttl_ms))
end
return out
