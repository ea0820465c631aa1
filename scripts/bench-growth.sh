#!/usr/bin/env bash
# Cost growth of uncached list and search requests with the catalogue
# (issue 26, docs/PERFORMANCE.md "Growth"): for each size, a fresh database
# seeded with `stayafrica seed` (SIZES properties, a tenth as many users,
# a fifth as many bookings), then p50/p99 of each filter alone, a
# combination, a date search, a deep page and a detail, every request a
# miss (the console invalidates the families before each one:
# scripts/growth.py). On the embedded default (SQLite) and on PostgreSQL +
# Redis (a redis-server of its own).
#
# Usage: scripts/bench-growth.sh     Knobs: SIZES ("10000 100000 1000000"),
# SETUPS ("sqlite pgredis"), SAMPLES (30), BUILD (1), PG_ADMIN.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

SIZES=${SIZES:-"10000 100000 1000000"}
SETUPS=${SETUPS:-"sqlite pgredis"}
SAMPLES=${SAMPLES:-30}
BUILD=${BUILD:-1}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
BIN=${CARGO_TARGET_DIR:-target}/release/stayafrica
[ "$BUILD" = 1 ] && cargo build --release --bin stayafrica

WORK=$(mktemp -d /tmp/bench-growth.XXXXXX)
PIDS=()
DBS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "${DBS[@]}"; do psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS \"$d\" WITH (FORCE)" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

for setup in $SETUPS; do
  for n in $SIZES; do
    extra=()
    case $setup in
      sqlite) db_url="sqlite://$WORK/growth-$n.db" ;;
      pgredis)
        db="sa_bench_growth_$$_$n"; DBS+=("$db")
        psql "$PG_ADMIN" -qc "CREATE DATABASE \"$db\"" >/dev/null
        db_url="postgres://postgres@127.0.0.1:5432/$db"
        extra=(REDIS_URL="redis://127.0.0.1:$REDIS_PORT" STAYAFRICA_KEY_PREFIX="growth:$$:$n:")
        ;;
    esac
    start=$(date +%s.%N)
    env -u REDIS_URL DATABASE_URL="$db_url" "$BIN" seed --users $((n / 10)) --properties "$n" \
      --bookings $((n / 5)) >"$WORK/seed.log" 2>&1
    seeded=$(echo "$(date +%s.%N) - $start" | bc)
    api=$(free_port); console=$(free_port)
    env DATABASE_URL="$db_url" "${extra[@]}" STAYAFRICA_EMAIL=log RUST_LOG=error \
      STAYAFRICA_THROTTLE_ANON=1000000000/hour STAYAFRICA_ADMIN_BIND="127.0.0.1:$console" \
      "$BIN" serve --no-worker --bind "127.0.0.1:$api" >"$WORK/serve.log" 2>&1 &
    pid=$!; PIDS+=($pid)
    wait_http "http://127.0.0.1:$api/health"
    result=$(python3 scripts/growth.py "http://127.0.0.1:$api" "http://127.0.0.1:$console" "$SAMPLES")
    echo "$setup $n seeded_in=${seeded}s $result"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
