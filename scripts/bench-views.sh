#!/usr/bin/env bash
# Times one view flush of N viewed properties (one pending view each) on
# SQLite with the in-process counters and on PostgreSQL with the counters
# in Redis, with the Redis calls the flush made (INFO commandstats) and a
# check that every view reached the database (examples/flush_views.rs).
#
#   SIZES="10000 100000 1000000" PROFILE=release scripts/bench-views.sh
#
# Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and Redis on
# 127.0.0.1:6379 (its DB 1, under a prefix of its own, removed after).
# Run it on an otherwise idle machine: no build or test at the same time.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"10000 100000"}
PROFILE=${PROFILE:-release}
REDIS=${REDIS:-redis://127.0.0.1:6379}
POSTGRES=${POSTGRES:-postgres://postgres@127.0.0.1:5432}

if [ "$PROFILE" = release ]; then
  cargo build --release --example flush_views
  BIN=./target/release/examples/flush_views
else
  cargo build --example flush_views
  BIN=./target/debug/examples/flush_views
fi

echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) profile=$PROFILE cores=$(nproc)"
for n in $SIZES; do
  "$BIN" --properties "$n" --database sqlite
  "$BIN" --properties "$n" --database postgres --postgres "$POSTGRES" --redis "$REDIS"
done
