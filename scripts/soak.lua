-- wrk script of the soak (scripts/soak.sh): a mixed load of public reads,
-- views, signed-in reads, property writes, bookings, logins and one-time
-- code requests; counts every status. Environment: SOAK_DIR (cookies.txt,
-- host.txt, guests.txt written by soak.sh), SOAK_PROPERTIES (ids 1..N),
-- SOAK_DELAY_MS (pause before each request, per connection: sets the rate).

local dir = os.getenv("SOAK_DIR")
local properties = tonumber(os.getenv("SOAK_PROPERTIES") or "50")
local pause = tonumber(os.getenv("SOAK_DELAY_MS") or "0")

local function lines(path)
  local t = {}
  for l in io.lines(path) do
    if #l > 0 then t[#t + 1] = l end
  end
  return t
end

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  threads[#threads + 1] = thread
end

function init(args)
  cookies = lines(dir .. "/cookies.txt")
  guests = lines(dir .. "/guests.txt")
  host = lines(dir .. "/host.txt")[1]
  counts = {}
  math.randomseed(os.time() * 100 + id)
end

local function pick(t) return t[math.random(#t)] end

local function day(offset)
  return os.date("!%Y-%m-%d", os.time() + 86400 * offset)
end

function request()
  local r = math.random(100)
  local json = { ["Content-Type"] = "application/json" }
  if r <= 45 then
    local cities = { "", "&city=Nairobi", "&city=Accra", "&min_price=50" }
    return wrk.format("GET", "/api/v1/properties?page=" .. math.random(3) .. pick(cities))
  elseif r <= 60 then
    return wrk.format("GET", "/api/v1/properties/" .. math.random(properties))
  elseif r <= 75 then
    return wrk.format("GET", "/api/v1/me", { Cookie = pick(cookies) })
  elseif r <= 83 then
    return wrk.format("GET", "/api/v1/dashboard", { Cookie = pick(cookies) })
  elseif r <= 88 then
    json.Cookie = host
    return wrk.format("PATCH", "/api/v1/properties/" .. math.random(properties), json,
      '{"title":"Soak home ' .. math.random(1000000) .. '"}')
  elseif r <= 92 then
    json.Cookie = pick(cookies)
    local from = math.random(1, 300)
    return wrk.format("POST", "/api/v1/bookings", json,
      string.format('{"property_id":%d,"check_in":"%s","check_out":"%s","guests":1}',
        math.random(properties), day(from), day(from + math.random(1, 3))))
  elseif r <= 95 then
    return wrk.format("POST", "/api/v1/auth/login", json,
      '{"email":"' .. pick(guests) .. '","password":"password123"}')
  else
    return wrk.format("POST", "/api/v1/auth/otp", json, '{"email":"' .. pick(guests) .. '"}')
  end
end

function delay()
  return pause
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local keys = {}
  for status in pairs(total) do keys[#keys + 1] = status end
  table.sort(keys)
  for _, status in ipairs(keys) do
    io.write(string.format("status %d: %d\n", status, total[status]))
  end
  local e = summary.errors
  io.write(string.format("socket errors: connect %d, read %d, write %d, timeout %d\n",
    e.connect, e.read, e.write, e.timeout))
  io.write(string.format("requests %d in %.1f s: %.0f/s; latency p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
