-- wrk script of scripts/bench-booking.sh: every request is a distinct
-- booking that succeeds. Request k of thread t (of T) is booking number
-- i = k*T + t: property (i mod P) + 1, one night from day BASE + i div P
-- (days since 1970-01-01). Each wrk run gets its own BASE, so no two
-- bookings of a run, or of two runs, overlap on a property.
-- Arguments (after --): BASE_DAY THREADS PROPERTIES COOKIE [CSRF_TOKEN]
-- Prints the count of every status and "bookings <first day> <last day>".

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  base = tonumber(args[1])
  nthreads = tonumber(args[2])
  nprops = tonumber(args[3])
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Cookie"] = args[4]
  if args[5] and #args[5] > 0 then wrk.headers["X-CSRFToken"] = args[5] end
  k = 0
  counts = {}
end

local function date(day)
  return os.date("!%Y-%m-%d", day * 86400)
end

function request()
  local i = k * nthreads + tid
  k = k + 1
  local day = base + math.floor(i / nprops)
  return wrk.format("POST", "/api/v1/bookings", nil,
    string.format('{"property_id":%d,"check_in":"%s","check_out":"%s","guests":1}',
      i % nprops + 1, date(day), date(day + 1)))
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total, sent, per_day = {}, 0, 1
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts")) do
      total[status] = (total[status] or 0) + n
    end
    sent = math.max(sent, t:get("k") * t:get("nthreads"))
    per_day = t:get("nprops")
  end
  local keys = {}
  for status in pairs(total) do keys[#keys + 1] = status end
  table.sort(keys)
  for _, status in ipairs(keys) do
    io.write(string.format("status %d: %d\n", status, total[status]))
  end
  io.write(string.format("days used: %d\n", math.floor(sent / per_day) + 1))
end
