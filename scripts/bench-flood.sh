#!/usr/bin/env bash
# Cached GETs while a flood of sign-ins runs (issue 24, docs/PERFORMANCE.md
# "Abuse"): wrk on the featured list, alone and then while 30 loopback
# addresses (scripts/flood.py, 4 connections each) send registrations and
# logins with unknown emails as fast as they are answered — both hash a
# password, the most expensive work a client can ask for. Side by side in
# one run, alternating, on Redis + PostgreSQL (a redis-server of its own, a
# PostgreSQL database of its own). The service runs with the default
# limits except the anonymous one (lifted, so that the flood reaches the
# hashing instead of stopping at 100 requests an hour per address).
#
# Usage: scripts/bench-flood.sh       (5 s warm-up + 15 s measured per run)
# Knobs: WARMUP, DURATION, ROUNDS (2), THREADS (2), CONNS (32), ADDRESSES
# (30), FLOOD_CONNS (4 per address), BUILD (1), PG_ADMIN.
#
# Prints per run: req/s and p50/p99 of the cached GET, the flood's answers,
# and the service's peak RSS during the run (sampled from /proc).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

WARMUP=${WARMUP:-5}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
ADDRESSES=${ADDRESSES:-30}
FLOOD_CONNS=${FLOOD_CONNS:-4}
BUILD=${BUILD:-1}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/stayafrica

if ! command -v wrk >/dev/null; then
  echo "wrk not found: installing the Debian package"
  if [ "$(id -u)" = 0 ]; then apt-get install -y wrk; else sudo apt-get install -y wrk; fi
fi
[ "$BUILD" = 1 ] && cargo build --release --bin stayafrica

WORK=$(mktemp -d /tmp/bench-flood.XXXXXX)
PIDS=()
PG_DB=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$PG_DB" ] && psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --maxmemory 512mb --maxmemory-policy allkeys-lru >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
PG_DB="sa_bench_flood_$$_$(date +%s)"
psql "$PG_ADMIN" -qc "CREATE DATABASE \"$PG_DB\"" >/dev/null
DB_URL="postgres://postgres@127.0.0.1:5432/$PG_DB"
echo "== seeding $DB_URL"
env -u REDIS_URL DATABASE_URL="$DB_URL" "$BIN" seed >"$WORK/seed.log" 2>&1

PORT=$(free_port)
env DATABASE_URL="$DB_URL" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" STAYAFRICA_EMAIL=log \
  STAYAFRICA_KEY_PREFIX="benchflood:$$:" STAYAFRICA_THROTTLE_ANON=1000000000/hour RUST_LOG=error \
  "$BIN" serve --no-worker --bind "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=($SERVE_PID)
URL="http://127.0.0.1:$PORT"
wait_http "$URL/health"
GET="$URL/api/v1/properties/featured"
curl -sf -o /dev/null "$GET"

rss_mib() { awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$SERVE_PID/status"; }

# sample_rss OUTFILE: the peak RSS (MiB) until killed.
sample_rss() {
  local peak=0 now
  while true; do
    now=$(rss_mib); [ "$now" -gt "$peak" ] && peak=$now && echo "$peak" >"$1"
    sleep 0.05
  done
}

p() { to_ms "$(awk -v q="$2" '$1==q {print $2}' "$1")"; }
rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$1"; }
bad() { awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' "$1"; }

printf '%-8s %-7s %9s %8s %8s %9s  %s\n' run round "req/s" "p50 ms" "p99 ms" "peak MiB" "flood answers" >"$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
  for mode in alone flood; do
    wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "$GET" >/dev/null
    echo 0 >"$WORK/peak"
    sample_rss "$WORK/peak" & SAMPLER=$!
    FLOOD=""
    if [ "$mode" = flood ]; then
      python3 scripts/flood.py "$URL" "$((DURATION + 2))" "$ADDRESSES" "$FLOOD_CONNS" >"$WORK/flood.json" &
      FLOOD=$!
      sleep 1
    fi
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$GET" >"$WORK/wrk"
    answers="-"
    if [ -n "$FLOOD" ]; then wait "$FLOOD"; answers=$(cat "$WORK/flood.json"); fi
    kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null || true
    printf '%-8s %-7s %9s %8s %8s %9s  %s %s\n' "$mode" "$round" "$(rps "$WORK/wrk")" \
      "$(p "$WORK/wrk" 50%)" "$(p "$WORK/wrk" 99%)" "$(cat "$WORK/peak")" "$answers" "$(bad "$WORK/wrk")" >>"$WORK/results"
    sleep 2
  done
done
cat "$WORK/results"
