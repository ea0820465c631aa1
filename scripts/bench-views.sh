#!/usr/bin/env bash
# Times one view flush of N viewed properties (one pending view each) on
# SQLite with the in-process counters and on PostgreSQL with the counters
# in Redis, with the Redis calls the flush made (INFO commandstats) and a
# check that every view reached the database (examples/flush_views.rs).
#
#   SIZES="10000 100000 1000000" PROFILE=release scripts/bench-views.sh
#
# Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and redis-server on
# PATH: the counters go to a Redis of its own (a free port, no
# persistence), so that the calls counted are the flush's alone.
# Run it on an otherwise idle machine: no build or test at the same time.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

SIZES=${SIZES:-"10000 100000"}
PROFILE=${PROFILE:-release}
POSTGRES=${POSTGRES:-postgres://postgres@127.0.0.1:5432}
command -v redis-server >/dev/null || { echo "FATAL: redis-server not on PATH" >&2; exit 1; }

if [ "$PROFILE" = release ]; then
  cargo build --release --example flush_views
  BIN=./target/release/examples/flush_views
else
  cargo build --example flush_views
  BIN=./target/debug/examples/flush_views
fi

PORT=$(free_port)
redis-server --port "$PORT" --save "" --appendonly no >/dev/null 2>&1 &
REDIS_PID=$!
trap 'kill "$REDIS_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS=redis://127.0.0.1:$PORT

echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) profile=$PROFILE cores=$(nproc)"
for n in $SIZES; do
  "$BIN" --properties "$n" --database sqlite
  "$BIN" --properties "$n" --database postgres --postgres "$POSTGRES" --redis "$REDIS"
done
