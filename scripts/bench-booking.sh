#!/usr/bin/env bash
# POST /api/v1/bookings of the service against the Django version of the
# guide (bench/django), side by side in one run (issue 12, docs/PERFORMANCE.md
# "POST booking against the Django version"). Both systems share one
# redis-server of the script's own on a free port (the service with its
# default DB numbers, Django with the guide's: broker 0, cache 1, sessions 2,
# rate limits 3) and one PostgreSQL database of its own, seeded with
# `stayafrica seed` (10,000 properties); Django reads and writes the same
# tables. Each signs the same guest in (user500: the service through its
# login endpoint, Django with `manage.py bench_session`). wrk runs
# scripts/bench-booking.lua: every POST is a distinct one-night booking that
# succeeds (its own property and day per request; a new range of days for
# every wrk run). The systems alternate: round 1 service, Django, round 2 ...
#
# Usage: scripts/bench-booking.sh            (5 s warm-up + 15 s measured, 2 rounds)
#        BUILD=0 WARMUP=2 DURATION=5 ROUNDS=1 scripts/bench-booking.sh   (a quick run)
# Knobs (environment): WARMUP, DURATION (seconds), ROUNDS (2), THREADS (2),
# CONNS (32), SCENARIOS ("booking"; also "featured list detail dashboard":
# the cached GETs of scripts/bench-hot.sh, against the guide's views), BUILD (1: cargo build --release first), PG_ADMIN (admin URL for
# CREATE DATABASE), DJANGO_WORKERS (5: gunicorn sync workers, 2 x cores + 1),
# VENV (/tmp/stayafrica-django-venv: made from bench/django/requirements.txt
# when missing or outdated), SYSTEMS ("ours django"), PERF (1: `perf record
# -g` of the service during its first measured run, report in OUT), OUT
# (directory kept for the wrk outputs; default a new one under /tmp).
#
# Prints per run: req/s, p99, the count of each status (all 201 expected; the
# script fails if fewer than half are), Redis commands per booking (INFO
# commandstats of its own Redis over the measured run, the commands run
# inside scripts included, with the busiest commands), database transactions
# per booking (pg_stat_database xact_commit + xact_rollback over the measured
# run, read after PostgreSQL's 10 s stats publication delay) and the CPU
# time (/proc/PID/stat) of the application's processes, of Redis and of the
# database's PostgreSQL backends; all of these per booking the database
# inserted during the measured run (requests in flight at wrk's deadline
# book too; for a GET: per request answered). Then the ratio service/Django
# per round and scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
ROOT=$PWD

WARMUP=${WARMUP:-5}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
BUILD=${BUILD:-1}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
DJANGO_WORKERS=${DJANGO_WORKERS:-5}
VENV=${VENV:-/tmp/stayafrica-django-venv}
SYSTEMS=${SYSTEMS:-"ours django"}
SCENARIOS=${SCENARIOS:-booking}
PERF=${PERF:-0}
OUT=${OUT:-$(mktemp -d /tmp/bench-booking.XXXXXX)}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/stayafrica
PROPERTIES=10000
GUEST=user500@example.com
# PostgreSQL publishes a backend's statistics at most 10 s after its last
# transaction when it goes idle.
STATS_DELAY=${STATS_DELAY:-11}
# Throttles raised the same way for both: the benchmark measures bookings,
# not 429s.
export STAYAFRICA_THROTTLE_ANON=1000000000/hour STAYAFRICA_THROTTLE_USER=1000000000/hour \
  STAYAFRICA_THROTTLE_BOOKING=1000000000/hour

if ! command -v wrk >/dev/null; then
  echo "wrk not found: installing the Debian package"
  if [ "$(id -u)" = 0 ]; then apt-get install -y wrk; else sudo apt-get install -y wrk; fi
fi
if [ "$BUILD" = 1 ]; then
  cargo build --release --bin stayafrica
fi
REQS=$ROOT/bench/django/requirements.txt
if ! cmp -s "$REQS" "$VENV/requirements.txt" 2>/dev/null; then
  echo "== making the Django venv $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$REQS"
  cp "$REQS" "$VENV/requirements.txt"
fi

mkdir -p "$OUT"
PIDS=()
PG_DB=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$PG_DB" ]; then
    psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --maxmemory 1gb --maxmemory-policy noeviction >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=($REDIS_PID)
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
PG_DB="sa_bench_booking_$$_$(date +%s)"
psql "$PG_ADMIN" -qc "CREATE DATABASE \"$PG_DB\"" >/dev/null
DB_URL="postgres://postgres@127.0.0.1:5432/$PG_DB"
echo "== seeding $DB_URL"
env -u REDIS_URL DATABASE_URL="$DB_URL" "$BIN" seed >"$OUT/seed.log" 2>&1

OURS_PORT=$(free_port)
env DATABASE_URL="$DB_URL" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" STAYAFRICA_EMAIL=log RUST_LOG=warn \
  "$BIN" serve --no-worker --bind "127.0.0.1:$OURS_PORT" >"$OUT/serve.log" 2>&1 &
OURS_PID=$!
PIDS+=($OURS_PID)
DJANGO_PORT=$(free_port)
env DATABASE_URL="$DB_URL" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
  "$VENV/bin/gunicorn" --chdir "$ROOT/bench/django" -k sync -w "$DJANGO_WORKERS" \
  -b "127.0.0.1:$DJANGO_PORT" stayafrica_django.wsgi:application >"$OUT/gunicorn.log" 2>&1 &
DJANGO_PID=$!
PIDS+=($DJANGO_PID)
wait_http "http://127.0.0.1:$OURS_PORT/health"
wait_http "http://127.0.0.1:$DJANGO_PORT/health"

# The same guest signed in on each.
curl -sf -c "$OUT/jar" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$GUEST\",\"password\":\"password123\"}" \
  "http://127.0.0.1:$OURS_PORT/api/v1/auth/login" >/dev/null
OURS_COOKIE="sessionid=$(awk '$6=="sessionid" {print $7}' "$OUT/jar")"
OURS_CSRF=""
read -r DJ_SID DJ_CSRF_COOKIE DJANGO_CSRF < <(env DATABASE_URL="$DB_URL" \
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT" "$VENV/bin/python" \
  "$ROOT/bench/django/manage.py" bench_session "$GUEST")
DJANGO_COOKIE="$DJ_SID $DJ_CSRF_COOKIE"

port_of() { if [ "$1" = ours ]; then echo "$OURS_PORT"; else echo "$DJANGO_PORT"; fi; }
cookie_of() { if [ "$1" = ours ]; then echo "$OURS_COOKIE"; else echo "$DJANGO_COOKIE"; fi; }
csrf_of() { if [ "$1" = ours ]; then echo "$OURS_CSRF"; else echo "$DJANGO_CSRF"; fi; }

# Days since 1970-01-01 from 2030-01-01 on; every wrk run takes a new range.
NEXT_DAY=21915
SPAN=400
next_base() { BASE=$NEXT_DAY; NEXT_DAY=$((NEXT_DAY + SPAN)); }

# One booking by hand on each, checked against the contract's status.
for s in $SYSTEMS; do
  next_base
  ci=$(date -u -d "@$((BASE * 86400))" +%F); co=$(date -u -d "@$(((BASE + 1) * 86400))" +%F)
  args=(-s -o "$OUT/probe-$s.json" -w '%{http_code}' -H 'Content-Type: application/json' -H "Cookie: $(cookie_of "$s")")
  [ -n "$(csrf_of "$s")" ] && args+=(-H "X-CSRFToken: $(csrf_of "$s")")
  code=$(curl "${args[@]}" -d "{\"property_id\":1,\"check_in\":\"$ci\",\"check_out\":\"$co\",\"guests\":1}" \
    "http://127.0.0.1:$(port_of "$s")/api/v1/bookings")
  if [ "$code" != 201 ]; then echo "FATAL: $s answered $code to a booking: $(cat "$OUT/probe-$s.json")" >&2; exit 1; fi
  echo "== $s: $(cat "$OUT/probe-$s.json")"
done

# CPU clock ticks (utime + stime) of each PID given, one "pid ticks" a line.
ticks() { for p in "$@"; do [ -r "/proc/$p/stat" ] && awk -v p="$p" '{print p, $14 + $15}' "/proc/$p/stat"; done; true; }
# PIDs of: the application of system $1 (gunicorn's master and workers),
# Redis, this database's PostgreSQL backends.
app_pids() { if [ "$1" = ours ]; then echo "$OURS_PID"; else echo "$DJANGO_PID $(pgrep -P "$DJANGO_PID" | tr '\n' ' ')"; fi; }
pg_pids() { psql "$PG_ADMIN" -Atc "SELECT pid FROM pg_stat_activity WHERE datname = '$PG_DB'" | tr '\n' ' '; }
# µs of CPU per booking between two "ticks" outputs ($1 before, $2 after), $3 bookings.
cpu_us() { awk -v n="$3" -v hz="$(getconf CLK_TCK)" 'NR==FNR {b[$1]=$2; next} {d += $2 - b[$1]} END {printf "%.0f", n ? d / hz * 1e6 / n : 0}' <(echo "$1") <(echo "$2"); }

xacts() {
  psql "$PG_ADMIN" -Atc "SELECT xact_commit + xact_rollback, tup_inserted FROM pg_stat_database WHERE datname = '$PG_DB'"
}

RESULTS=$OUT/results.txt
printf '%-5s %-9s %-6s %8s %9s %8s %9s %8s %10s %9s %16s %s\n' round scenario system "req/s" p99 "ok" "other" "n" "redis/n" "xact/n" "cpu us app/rd/pg" "load (after)" >"$RESULTS"
declare -A RPS


# wrk_args SYSTEM SCENARIO: wrk's target arguments (a new range of days for
# each booking run).
wrk_args() {
  local url="http://127.0.0.1:$(port_of "$1")"
  if [ "$2" = booking ]; then
    next_base
    WRK_ARGS=(-s scripts/bench-booking.lua "$url" -- "$BASE" "$THREADS" "$PROPERTIES" "$(cookie_of "$1")" "$(csrf_of "$1")")
  else
    WRK_ARGS=("$url$(path_of "$2")")
    [ "$2" = dashboard ] && WRK_ARGS=(-H "Cookie: $(cookie_of "$1")" "${WRK_ARGS[@]}")
  fi
  true
}

run() {
  local s=$1 round=$2 sc=$3
  echo "-- round $round: $sc, $s (load $(load))"
  wrk_args "$s" "$sc"
  wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "${WRK_ARGS[@]}" >"$OUT/warm-$sc-$s-$round.txt"
  sleep "$STATS_DELAY"
  local before after
  before=$(xacts)
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  local procs cpu_before cpu_after
  procs="$(app_pids "$s")|$REDIS_PID|$(pg_pids)"
  cpu_before=$(IFS='|' read -r a r g <<<"$procs"; echo "A"; ticks $a; echo "R"; ticks $r; echo "G"; ticks $g)
  local perf_pid=""
  if [ "$PERF" = 1 ] && [ "$s" = ours ] && [ "$round" = 1 ] && [ "$sc" = booking ]; then
    perf record -g -o "$OUT/perf.data" -p "$OURS_PID" -- sleep "$DURATION" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  local w=$OUT/wrk-$sc-$s-$round.txt
  wrk_args "$s" "$sc"
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "${WRK_ARGS[@]}" >"$w"
  local load_after
  load_after=$(load)
  # A GET's commands are counted at once (over the requests wrk saw answered;
  # those still in flight at the deadline add at most CONNS requests' worth);
  # a booking's once the ones in flight are done (over the rows inserted).
  [ "$sc" = booking ] || redis-cli -p "$REDIS_PORT" info commandstats >"$OUT/cmds-$sc-$s-$round.txt"
  procs="$(app_pids "$s")|$REDIS_PID|$(pg_pids)"
  cpu_after=$(IFS='|' read -r a r g <<<"$procs"; echo "A"; ticks $a; echo "R"; ticks $r; echo "G"; ticks $g)
  [ -n "$perf_pid" ] && wait "$perf_pid" 2>/dev/null || true
  sleep "$STATS_DELAY"
  after=$(xacts)
  [ "$sc" = booking ] && redis-cli -p "$REDIS_PORT" info commandstats >"$OUT/cmds-$sc-$s-$round.txt"

  local rps p99 created total other
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$w")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' "$w")")
  total=$(awk '/requests in/ {print $1}' "$w")
  if [ "$sc" = booking ]; then
    created=$(awk '$1=="status" && $2=="201:" {print $3}' "$w"); created=${created:-0}
    other=$(awk '$1=="status" && $2!="201:" {printf "%s%s", sep, $2 $3; sep=","}' "$w")
  else
    other=$(awk '/Non-2xx/ {print $NF}' "$w")
    created=$((total - ${other:-0}))
  fi
  grep -E 'Socket errors' "$w" || true
  # Commands per booking, the statistics calls of redis-cli left out.
  local redis_per top inserted
  inserted=$((${after##*|} - ${before##*|}))
  [ "$sc" = booking ] || inserted=$total
  redis_per=$(awk -F'[:,=]' -v n="$inserted" '/^cmdstat_/ && $1 !~ /^cmdstat_(info|config)/ {c += $3} END {printf "%.2f", n ? c / n : 0}' "$OUT/cmds-$sc-$s-$round.txt")
  top=$(awk -F'[:,=]' -v n="$inserted" '/^cmdstat_/ && $1 !~ /^cmdstat_(info|config)/ {sub(/^cmdstat_/, "", $1); printf "%s %.2f\n", $1, $3 / n}' \
    "$OUT/cmds-$sc-$s-$round.txt" | sort -k2 -nr | head -8 | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')
  # Per booking inserted during the measured run (wrk stops counting
  # answers at its deadline; requests still in flight then book too).
  local xact_per
  xact_per=$(awk -v b="${before%%|*}" -v a="${after%%|*}" -v n="$inserted" 'BEGIN {printf "%.2f", n ? (a - b) / n : 0}')
  # CPU per booking: the application, Redis, the PostgreSQL backends.
  local cpu=""
  for part in A R G; do
    cpu+="$(cpu_us "$(sed -n "/^$part\$/,/^[ARG]\$/p" <<<"$cpu_before" | grep ' ')" \
      "$(sed -n "/^$part\$/,/^[ARG]\$/p" <<<"$cpu_after" | grep ' ')" "$inserted")/"
  done
  printf '%-5s %-9s %-6s %8s %8sms %8s %9s %8s %10s %9s %16s %s\n' "$round" "$sc" "$s" "$rps" "$p99" "$created" "${other:--}" \
    "$inserted" "$redis_per" "$xact_per" "${cpu%/}" "$load_after" | tee -a "$RESULTS"
  echo "   $sc $s, Redis per request: $top" | tee -a "$OUT/commands.txt"
  RPS[$sc-$s-$round]=$rps
  if [ $((created * 2)) -lt "$total" ]; then
    echo "FATAL: $sc, $s: only $created of $total requests succeeded (other: $other)" >&2
    exit 1
  fi
}

echo "wrk -t$THREADS -c$CONNS, ${WARMUP}s warm-up + ${DURATION}s measured, $ROUNDS round(s), gunicorn -w $DJANGO_WORKERS; load average: $(load); outputs in $OUT"
for round in $(seq 1 "$ROUNDS"); do
  for sc in $SCENARIOS; do
    for s in $SYSTEMS; do run "$s" "$round" "$sc"; done
  done
done
if [ "$PERF" = 1 ] && [ -f "$OUT/perf.data" ]; then
  perf report -i "$OUT/perf.data" --no-children --stdio --percent-limit 1.5 2>/dev/null | grep -E '^ +[0-9]' >"$OUT/perf.txt" || true
fi

echo
echo "== results ($(date -u +%FT%TZ), load average $(load))"
cat "$RESULTS"
if [[ " $SYSTEMS " == *" ours "* && " $SYSTEMS " == *" django "* ]]; then
  for round in $(seq 1 "$ROUNDS"); do
    for sc in $SCENARIOS; do
      awk -v a="${RPS[$sc-ours-$round]}" -v b="${RPS[$sc-django-$round]}" -v r="$round" -v sc="$sc" \
        'BEGIN {printf "round %s, %s: service/Django %.1fx\n", r, sc, a / b}'
    done
  done
fi
echo "Redis commands per request (per booking inserted for bookings):"
cat "$OUT/commands.txt"
[ -f "$OUT/perf.txt" ] && { echo "perf (service, round 1, self time >= 1.5%):"; head -25 "$OUT/perf.txt"; }
true
