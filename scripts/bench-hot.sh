#!/usr/bin/env bash
# The hot-path benchmark of issue 12 (docs/PERFORMANCE.md, "Hot path"):
# cached GETs of the service against a bare axum handler that sends the
# same bytes from memory (examples/bare.rs), side by side in one run, with
# wrk. Scenarios: featured list, page 2 of the Nairobi list, one property
# detail (counts a view), the signed-in dashboard. Setups: the embedded
# default (SQLite file, in-process backends) and Redis + PostgreSQL (a
# redis-server of its own on a free port, so its command count is only this
# service's; a PostgreSQL database of its own). Both are seeded with
# `stayafrica seed` (10,000 properties).
#
# Usage: scripts/bench-hot.sh            (5 s warm-up + 15 s measured)
#        WARMUP=2 DURATION=5 scripts/bench-hot.sh        (a quick run)
# Knobs (environment): WARMUP, DURATION (seconds), ROUNDS (alternating
# service/bare rounds, default 1), THREADS (2), CONNS (32),
# SETUPS ("embedded redis"), SCENARIOS ("featured list detail dashboard"),
# BUILD (1: cargo build --release first), PG_ADMIN (admin URL for CREATE
# DATABASE), ACCEPT_ENCODING (sent by wrk to both servers when set).
#
# Prints, per setup and scenario: body bytes, req/s and p99 of the service
# and of the bare handler, their ratio, and (Redis setup) the Redis commands
# the server processed per measured request (INFO total_commands_processed,
# which counts the commands run inside scripts too), and the commands the
# service sent per request (MONITOR during an extra MONITOR_SECS run, the
# lines of commands run inside scripts left out).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

WARMUP=${WARMUP:-5}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-1}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SETUPS=${SETUPS:-"embedded redis"}
SCENARIOS=${SCENARIOS:-"featured list detail dashboard"}
BUILD=${BUILD:-1}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
ACCEPT_ENCODING=${ACCEPT_ENCODING:-}
MONITOR_SECS=${MONITOR_SECS:-2}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/stayafrica
BARE=$TARGET/release/examples/bare

if ! command -v wrk >/dev/null; then
  echo "wrk not found: installing the Debian package"
  if [ "$(id -u)" = 0 ]; then apt-get install -y wrk; else sudo apt-get install -y wrk; fi
fi
if [ "$BUILD" = 1 ]; then
  cargo build --release --bin stayafrica --example bare
fi

WORK=$(mktemp -d /tmp/bench-hot.XXXXXX)
PIDS=()
PG_DB=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$PG_DB" ]; then
    psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT




# run_wrk URL COOKIE OUTFILE: warm-up, then the measured run into OUTFILE.
run_wrk() {
  local args=(-t"$THREADS" -c"$CONNS")
  [ -n "$2" ] && args+=(-H "Cookie: $2")
  [ -n "$ACCEPT_ENCODING" ] && args+=(-H "Accept-Encoding: $ACCEPT_ENCODING")
  wrk "${args[@]}" -d"${WARMUP}s" "$1" >/dev/null
  [ -n "${REDIS_PORT:-}" ] && redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  wrk "${args[@]}" -d"${DURATION}s" --latency "$1" >"$3"
}
rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$1"; }
p99() { to_ms "$(awk '$1=="99%" {print $2}' "$1")"; }
reqs() { awk '/requests in/ {print $1}' "$1"; }
bad() { awk '/Non-2xx|Socket errors/ {print}' "$1"; }

RESULTS=$WORK/results.txt
printf '%-9s %-10s %8s %10s %9s %10s %9s %7s %9s %9s\n' setup scenario bytes "svc req/s" "svc p99" "bare req/s" "bare p99" ratio "redis/req" "sent/req" >"$RESULTS"

run_setup() {
  local setup=$1 sport bport db_url env_extra=()
  sport=$(free_port); bport=$(free_port)
  REDIS_PORT=""
  case $setup in
    embedded)
      db_url="sqlite://$WORK/embedded.db"
      ;;
    redis)
      REDIS_PORT=$(free_port)
      redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --maxmemory 512mb --maxmemory-policy allkeys-lru >"$WORK/redis.log" 2>&1 &
      PIDS+=($!)
      for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
      PG_DB="sa_bench_hot_$$_$(date +%s)"
      psql "$PG_ADMIN" -qc "CREATE DATABASE \"$PG_DB\"" >/dev/null
      db_url="postgres://postgres@127.0.0.1:5432/$PG_DB"
      env_extra=(REDIS_URL="redis://127.0.0.1:$REDIS_PORT" STAYAFRICA_KEY_PREFIX="benchhot:$$:")
      ;;
    *) echo "unknown setup $setup" >&2; exit 1 ;;
  esac
  echo "== $setup: seeding $db_url"
  env -u REDIS_URL DATABASE_URL="$db_url" "$BIN" seed >"$WORK/seed-$setup.log" 2>&1
  env -u REDIS_URL DATABASE_URL="$db_url" "${env_extra[@]}" \
    STAYAFRICA_THROTTLE_ANON=1000000000/hour STAYAFRICA_THROTTLE_USER=1000000000/hour STAYAFRICA_EMAIL=log \
    RUST_LOG=warn "$BIN" serve --no-worker --bind "127.0.0.1:$sport" >"$WORK/serve-$setup.log" 2>&1 &
  local serve_pid=$!
  PIDS+=($serve_pid)
  wait_http "http://127.0.0.1:$sport/health"

  # A guest with bookings (ids above the 100 hosts are guests).
  curl -sf -c "$WORK/jar" -H 'Content-Type: application/json' \
    -d '{"email":"user500@example.com","password":"password123"}' \
    "http://127.0.0.1:$sport/api/v1/auth/login" >/dev/null
  local sid cookie
  sid=$(awk '$6=="sessionid" {print $7}' "$WORK/jar")
  cookie="sessionid=$sid"

  local paths=()
  for s in $SCENARIOS; do paths+=("$(path_of "$s")"); done
  # The bare server fetches each body once (which also fills the cache).
  "$BARE" --from "http://127.0.0.1:$sport" --bind "127.0.0.1:$bport" --cookie "$cookie" "${paths[@]}" \
    2>"$WORK/bare-$setup.log" &
  local bare_pid=$!
  PIDS+=($bare_pid)
  wait_http "http://127.0.0.1:$bport$(path_of "${SCENARIOS%% *}")"

  for round in $(seq 1 "$ROUNDS"); do
    for s in $SCENARIOS; do
      local path c="" bytes
      path=$(path_of "$s")
      [ "$s" = dashboard ] && c=$cookie
      local cargs=()
      [ -n "$c" ] && cargs=(-H "Cookie: $c")
      bytes=$(curl -sf "${cargs[@]}" "http://127.0.0.1:$sport$path" | wc -c)
      echo "-- $setup $s (round $round): service"
      run_wrk "http://127.0.0.1:$sport$path" "$c" "$WORK/svc.txt"
      local per_req="-" sent_req="-"
      if [ -n "$REDIS_PORT" ]; then
        local cmds
        cmds=$(redis-cli -p "$REDIS_PORT" info stats | awk -F: '/^total_commands_processed/ {print $2+0}')
        per_req=$(awk -v c="$cmds" -v n="$(reqs "$WORK/svc.txt")" 'BEGIN {printf "%.2f", (c-1)/n}')
        # Commands the service SENT (not those its scripts ran): MONITOR
        # during a short extra run (it slows Redis, not the ratio), lines
        # marked "lua]" left out.
        (timeout $((MONITOR_SECS + 2)) redis-cli -p "$REDIS_PORT" monitor >"$WORK/mon.txt" 2>/dev/null || true) &
        local mon_pid=$!
        sleep 0.5
        local margs=(-t"$THREADS" -c"$CONNS" -d"${MONITOR_SECS}s")
        [ -n "$c" ] && margs+=(-H "Cookie: $c")
        wrk "${margs[@]}" "http://127.0.0.1:$sport$path" >"$WORK/mon-wrk.txt"
        wait "$mon_pid" 2>/dev/null || true
        local sent
        sent=$(grep '^[0-9]' "$WORK/mon.txt" | grep -vc ' lua\] ' || true)
        sent_req=$(awk -v c="$sent" -v n="$(reqs "$WORK/mon-wrk.txt")" 'BEGIN {printf "%.3f", c/n}')
      fi
      bad "$WORK/svc.txt"
      echo "-- $setup $s (round $round): bare"
      local saved_port=$REDIS_PORT
      REDIS_PORT=""
      run_wrk "http://127.0.0.1:$bport$path" "$c" "$WORK/bare.txt"
      REDIS_PORT=$saved_port
      bad "$WORK/bare.txt"
      local sr br
      sr=$(rps "$WORK/svc.txt"); br=$(rps "$WORK/bare.txt")
      printf '%-9s %-10s %8s %10s %9s %10s %9s %6s%% %9s %9s\n' "$setup" "$s" "$bytes" "$sr" "$(p99 "$WORK/svc.txt")ms" \
        "$br" "$(p99 "$WORK/bare.txt")ms" "$(awk -v a="$sr" -v b="$br" 'BEGIN {printf "%.0f", 100*a/b}')" "$per_req" "$sent_req" \
        | tee -a "$RESULTS"
    done
  done

  kill "$bare_pid" "$serve_pid" 2>/dev/null || true
  wait "$bare_pid" "$serve_pid" 2>/dev/null || true
}

echo "wrk -t$THREADS -c$CONNS, ${WARMUP}s warm-up + ${DURATION}s measured, $ROUNDS round(s); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for setup in $SETUPS; do run_setup "$setup"; done
echo
echo "== results ($(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg))"
cat "$RESULTS"
