#!/usr/bin/env bash
# Soak of issue 10 (not run in CI): the release binary on PostgreSQL and
# two Redis servers of its own (every role on one with AOF, the cache on a
# second with noeviction), under a mixed load (scripts/soak.lua) at about
# 70% of the rate this machine sustains, with one fault a minute for
# SOAK_SECS (default 600). Prints the status counts, socket errors, RSS of
# the API process at start and end; exits non-zero if any status other than
# 2xx, 4xx or 503 was seen or a process died.
#
# Needs: wrk, redis-server, redis-cli, psql, curl, jq; PostgreSQL on
# 127.0.0.1:5432 (trust auth). Creates and drops its own database; never
# touches a server it did not start (the PostgreSQL fault is
# pg_terminate_backend on its own database).
#
#   cargo build --release --bin stayafrica
#   scripts/soak.sh            # SOAK_SECS=120 for a short run
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECS=${SOAK_SECS:-600}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/stayafrica}
[ -x "$BIN" ] || { echo "build first: cargo build --release --bin stayafrica" >&2; exit 1; }
WORK=$(mktemp -d /tmp/soak.XXXXXX)
DB=soak_$(date +%s)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MAIN=$(free_port); CACHE=$(free_port); API=$(free_port)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  redis-cli -p "$MAIN" shutdown nosave >/dev/null 2>&1 || true
  redis-cli -p "$CACHE" shutdown nosave >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

start_redis() { # port dir [args...]
  local port=$1 dir=$2; shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes --dir "$dir" \
    --daemonize yes --pidfile "$dir/pid" --logfile "$dir/log" "$@"
  for _ in $(seq 100); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return; sleep 0.1; done
  echo "redis $port did not come up" >&2; exit 1
}
redis_pid() { cat "$WORK/redis-$1/pid"; }

start_redis "$MAIN" "$WORK/redis-$MAIN"
start_redis "$CACHE" "$WORK/redis-$CACHE" --maxmemory-policy noeviction
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"

export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
export REDIS_URL=redis://127.0.0.1:$MAIN REDIS_CACHE_URL=redis://127.0.0.1:$CACHE/1
export STAYAFRICA_KEY_PREFIX=soak: STAYAFRICA_EMAIL=file:$WORK/mail STAYAFRICA_BIND=127.0.0.1:$API
export STAYAFRICA_THROTTLE_ANON=100000000/hour STAYAFRICA_THROTTLE_USER=100000000/hour
export STAYAFRICA_THROTTLE_BOOKING=100000000/hour STAYAFRICA_THROTTLE_OTP=100000000/hour
export STAYAFRICA_THROTTLE_LOGIN=100000000/hour STAYAFRICA_SESSION_TTL_SECS=3600
export STAYAFRICA_VIEW_FLUSH_SECS=5 RUST_LOG=warn
mkdir -p "$WORK/mail"

"$BIN" serve --no-worker 2>"$WORK/serve.log" & API_PID=$!; PIDS+=("$API_PID")
"$BIN" worker --concurrency 4 2>"$WORK/worker.log" & WORKER_PID=$!; PIDS+=("$WORKER_PID")
U=http://127.0.0.1:$API
for _ in $(seq 200); do curl -fs "$U/health" >/dev/null && break; sleep 0.1; done

# Data: a host with 50 properties, 20 guests with a session each.
post() { curl -fs -H 'content-type: application/json' "$@"; }
cookie() { grep -io 'sessionid=[^;]*' | head -n1; }
post "$U/api/v1/auth/register" -d '{"email":"host@soak.test","password":"password123","full_name":"Host","role":"host"}' >/dev/null
post -D - "$U/api/v1/auth/login" -d '{"email":"host@soak.test","password":"password123"}' | cookie > "$WORK/host.txt"
for i in $(seq 50); do
  post -H "cookie: $(cat "$WORK/host.txt")" "$U/api/v1/properties" -d "{\"title\":\"Home $i\",\"description\":\"d\",\"city\":\"$([ $((i % 2)) = 0 ] && echo Nairobi || echo Accra)\",\"country\":\"Kenya\",\"price_per_night\":\"$((40 + i)).00\",\"max_guests\":4,\"is_featured\":$([ $((i % 5)) = 0 ] && echo true || echo false)}" >/dev/null
done
: > "$WORK/cookies.txt"; : > "$WORK/guests.txt"
for i in $(seq 20); do
  e="guest$i@soak.test"; echo "$e" >> "$WORK/guests.txt"
  post "$U/api/v1/auth/register" -d "{\"email\":\"$e\",\"password\":\"password123\",\"full_name\":\"G\",\"role\":\"guest\"}" >/dev/null
  post -D - "$U/api/v1/auth/login" -d "{\"email\":\"$e\",\"password\":\"password123\"}" | cookie >> "$WORK/cookies.txt"
done
export SOAK_DIR=$WORK SOAK_PROPERTIES=50

# The machine's maximum on this mix (no pauses), then ~70% of it.
SOAK_DELAY_MS=0 wrk -t 2 -c 32 -d 20s --timeout 5s -s scripts/soak.lua "$U" > "$WORK/max.txt"
MAX=$(grep -o 'requests [0-9]* in [0-9.]* s: [0-9]*/s' "$WORK/max.txt" | grep -o '[0-9]*/s' | tr -d /s)
P50=$(grep -o 'p50 [0-9.]* ms' "$WORK/max.txt" | grep -o '[0-9.]*' | head -n1)
TARGET=$((MAX * 70 / 100))
# 16 connections, each pausing so that 16 / (pause + latency) = TARGET.
DELAY=$(python3 -c "print(max(0, round(16000 / $TARGET - $P50 / 2)))")
echo "max $MAX req/s (p50 $P50 ms); target $TARGET req/s: 16 connections, ${DELAY} ms pause"

rss() { ps -o rss= -p "$API_PID" | tr -d ' '; }
RSS_START=$(rss)

faults() {
  set +e
  local f=0
  while sleep 60; do
    f=$((f + 1))
    case $((f % 10)) in
      1) echo "$(date +%T) fault: SIGKILL main Redis, restart on its AOF"
         kill -9 "$(redis_pid "$MAIN")"; sleep 1; start_redis "$MAIN" "$WORK/redis-$MAIN" ;;
      2) echo "$(date +%T) fault: SIGSTOP main Redis for 5 s"
         kill -STOP "$(redis_pid "$MAIN")"; sleep 5; kill -CONT "$(redis_pid "$MAIN")" ;;
      3) echo "$(date +%T) fault: CLIENT KILL on the main Redis"
         redis-cli -p "$MAIN" client kill type normal skipme yes >/dev/null ;;
      4) echo "$(date +%T) fault: cache Redis full (noeviction) for 10 s"
         redis-cli -p "$CACHE" config set maxmemory 1 >/dev/null; sleep 10
         redis-cli -p "$CACHE" config set maxmemory 0 >/dev/null ;;
      5) echo "$(date +%T) fault: pg_terminate_backend on the soak database"
         psql -h 127.0.0.1 -U postgres -qAtc "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '$DB' AND pid <> pg_backend_pid()" ;;
      6) echo "$(date +%T) fault: cache Redis restarted empty"
         redis-cli -p "$CACHE" shutdown nosave >/dev/null 2>&1 || true; sleep 0.5
         rm -rf "$WORK/redis-$CACHE/appendonlydir"; start_redis "$CACHE" "$WORK/redis-$CACHE" --maxmemory-policy noeviction ;;
      7) echo "$(date +%T) fault: SIGKILL cache Redis, restart on its AOF"
         kill -9 "$(redis_pid "$CACHE")"; sleep 1; start_redis "$CACHE" "$WORK/redis-$CACHE" --maxmemory-policy noeviction ;;
      8) echo "$(date +%T) fault: SIGSTOP cache Redis for 5 s"
         kill -STOP "$(redis_pid "$CACHE")"; sleep 5; kill -CONT "$(redis_pid "$CACHE")" ;;
      9) echo "$(date +%T) fault: CLIENT KILL on both Redis servers"
         redis-cli -p "$MAIN" client kill type normal skipme yes >/dev/null
         redis-cli -p "$CACHE" client kill type normal skipme yes >/dev/null ;;
      0) echo "$(date +%T) fault: pg_terminate_backend again"
         psql -h 127.0.0.1 -U postgres -qAtc "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '$DB' AND pid <> pg_backend_pid()" ;;
    esac
  done
}
faults & FAULTS_PID=$!; PIDS+=("$FAULTS_PID")

SOAK_DELAY_MS=$DELAY wrk -t 2 -c 16 -d "${SOAK_SECS}s" --timeout 10s -s scripts/soak.lua "$U" | tee "$WORK/soak.txt"
kill "$FAULTS_PID" 2>/dev/null || true
RSS_END=$(rss)
echo "RSS of serve: start ${RSS_START} KiB, end ${RSS_END} KiB"
echo "health after: $(curl -s "$U/health")"
BAD=$(grep '^status' "$WORK/soak.txt" | awk '{s=$2+0} (s>=500 && s!=503) || s<200 || (s>=300 && s<400) {print}')
ALIVE=ok
kill -0 "$API_PID" 2>/dev/null || ALIVE="serve died"
kill -0 "$WORKER_PID" 2>/dev/null || ALIVE="worker died"
if [ -n "$BAD" ] || [ "$ALIVE" != ok ]; then
  echo "FAILED: ${BAD:-} $ALIVE"; tail -n 30 "$WORK/serve.log"; exit 1
fi
echo "soak passed (logs in $WORK)"
trap - EXIT; cleanup
