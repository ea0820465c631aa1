#!/usr/bin/env bash
# What a write pays for its outbox row (issue 23, docs/PERFORMANCE.md
# "Outbox"): on PostgreSQL, a property PATCH as the service runs it —
# the UPDATE (whose trigger records the outbox row) and, after the
# invalidation, the request's SELECT of its rows and their DELETE —
# against the bare UPDATE with the trigger disabled, with pgbench,
# alternating rounds in one run on one seeded database. "answer path" is
# what the answer waits for (the UPDATE and the SELECT; the request deletes
# its rows after answering).
#
# Usage: scripts/bench-outbox.sh      Knobs: DURATION (15 s), ROUNDS (2),
# CLIENTS (4), PG_ADMIN, BUILD (1: cargo build --release first).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-4}
BUILD=${BUILD:-1}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
BIN=${CARGO_TARGET_DIR:-target}/release/stayafrica
command -v pgbench >/dev/null || { echo "pgbench not found (Debian: postgresql-contrib / postgresql-client)" >&2; exit 1; }
[ "$BUILD" = 1 ] && cargo build --release --bin stayafrica

WORK=$(mktemp -d /tmp/bench-outbox.XXXXXX)
DB="sa_bench_outbox_$$_$(date +%s)"
URL="postgres://postgres@127.0.0.1:5432/$DB"
cleanup() {
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql "$PG_ADMIN" -qc "CREATE DATABASE \"$DB\"" >/dev/null
env -u REDIS_URL DATABASE_URL="$URL" "$BIN" seed >"$WORK/seed.log" 2>&1

cat >"$WORK/patch.sql" <<'SQL'
\set id random(1, 10000)
\set cents random(1000, 50000)
UPDATE properties SET price_cents = :cents, updated_at = now() WHERE id = :id AND deleted_at IS NULL;
SQL
cat >"$WORK/patch_answer.sql" <<'SQL'
\set id random(1, 10000)
\set cents random(1000, 50000)
UPDATE properties SET price_cents = :cents, updated_at = now() WHERE id = :id AND deleted_at IS NULL;
SELECT id FROM outbox WHERE event = 'property_changed' AND subject = :id ORDER BY id LIMIT 1000;
SQL
cat >"$WORK/patch_outbox.sql" <<'SQL'
\set id random(1, 10000)
\set cents random(1000, 50000)
UPDATE properties SET price_cents = :cents, updated_at = now() WHERE id = :id AND deleted_at IS NULL;
SELECT id FROM outbox WHERE event = 'property_changed' AND subject = :id ORDER BY id LIMIT 1000;
DELETE FROM outbox WHERE event = 'property_changed' AND subject = :id;
SQL

tps() { awk '/^tps/ {printf "%.0f", $3}' "$1"; }
lat() { awk '/latency average/ {print $4}' "$1"; }
printf '%-16s %-6s %8s %12s\n' variant round tps "latency ms" >"$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
  psql "$URL" -qc "ALTER TABLE properties DISABLE TRIGGER outbox_property" >/dev/null
  pgbench -n -c "$CLIENTS" -T "$DURATION" -f "$WORK/patch.sql" "$URL" >"$WORK/a" 2>&1
  printf '%-16s %-6s %8s %12s\n' "without outbox" "$round" "$(tps "$WORK/a")" "$(lat "$WORK/a")" >>"$WORK/results"
  psql "$URL" -qc "ALTER TABLE properties ENABLE TRIGGER outbox_property" >/dev/null
  pgbench -n -c "$CLIENTS" -T "$DURATION" -f "$WORK/patch_answer.sql" "$URL" >"$WORK/c" 2>&1
  printf '%-16s %-6s %8s %12s\n' "answer path" "$round" "$(tps "$WORK/c")" "$(lat "$WORK/c")" >>"$WORK/results"
  psql "$URL" -qc "DELETE FROM outbox" >/dev/null
  pgbench -n -c "$CLIENTS" -T "$DURATION" -f "$WORK/patch_outbox.sql" "$URL" >"$WORK/b" 2>&1
  printf '%-16s %-6s %8s %12s\n' "with outbox" "$round" "$(tps "$WORK/b")" "$(lat "$WORK/b")" >>"$WORK/results"
done
cat "$WORK/results"
echo "outbox rows left: $(psql "$URL" -tAc 'SELECT COUNT(*) FROM outbox')"
