#!/usr/bin/env bash
# Jobs/s against the number of Redis masters: one master (standalone)
# against a 3-master cluster with 1 partition and with its default (2 per
# master), `stayafrica jobs bench` with real worker processes, alternated
# ROUNDS times in one run.
#
# On one small machine every master shares the same cores with the workers,
# so Redis is not the limit and more masters cannot add throughput. To
# measure what a cluster of machines adds, each redis-server here runs in a
# cgroup of its own capped at CAP% of one core (cgroup v1 `cpu` or v2
# `cpu.max`): each master then has a fixed capacity, as a master on a
# machine of its own has, and the queue is limited by Redis as it is on a
# fleet whose one master is full. CAP=0 runs uncapped.
#
#   BUILD=0 CAP=25 JOBS=50000 ROUNDS=2 scripts/bench-jobs-masters.sh
#
# Needs root (cgroups), redis-server and redis-cli on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

CAP=${CAP:-25}
JOBS=${JOBS:-50000}
ROUNDS=${ROUNDS:-2}
PROCESSES=${PROCESSES:-4}
CONCURRENCY=${CONCURRENCY:-16}
BIN=./target/release/stayafrica
command -v redis-server >/dev/null || { echo "FATAL: redis-server not on PATH" >&2; exit 1; }
if [ "${BUILD:-1}" = 1 ]; then cargo build --release --bin stayafrica; fi
[ -x "$BIN" ] || { echo "FATAL: $BIN missing (BUILD=1)" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
GROUPS_MADE=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait "${PIDS[@]}" 2>/dev/null || true
  for g in "${GROUPS_MADE[@]}"; do rmdir "$g" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# cap PID NAME: puts PID in a cgroup of its own limited to CAP% of a core.
cap() {
  [ "$CAP" = 0 ] && return 0
  local quota=$((CAP * 1000)) g
  if [ -w /sys/fs/cgroup/cpu ] && [ -e /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    g=/sys/fs/cgroup/cpu/stayafrica-bench-$2
    mkdir -p "$g"; GROUPS_MADE+=("$g")
    echo 100000 >"$g/cpu.cfs_period_us"; echo "$quota" >"$g/cpu.cfs_quota_us"
    echo "$1" >"$g/cgroup.procs"
  elif [ -e /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
    g=/sys/fs/cgroup/stayafrica-bench-$2
    echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    mkdir -p "$g"; GROUPS_MADE+=("$g")
    echo "$quota 100000" >"$g/cpu.max"
    echo "$1" >"$g/cgroup.procs"
  else
    echo "FATAL: no writable cgroup cpu controller to cap Redis with (CAP=0 runs uncapped)" >&2; exit 1
  fi
}

# redis PORT [ARGS…]: starts a redis-server persisting nothing, capped.
redis() {
  local port=$1; shift
  mkdir -p "$WORK/$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK/$port" --daemonize no --logfile "$WORK/$port/log" "$@" &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  cap "$pid" "$port"
}

SOLO=$(free_port); redis "$SOLO"
# A cluster node also listens on its port + 10000 (the cluster bus), which
# must be a valid port too.
cluster_port() {
  python3 -c '
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p + 10000 > 65535: continue
    b = socket.socket()
    try: b.bind(("127.0.0.1", p + 10000))
    except OSError: continue
    print(p); break'
}
M=(); for _ in 1 2 3; do p=$(cluster_port); M+=("$p"); redis "$p" --cluster-enabled yes --cluster-node-timeout 2000; done
redis-cli --cluster create "127.0.0.1:${M[0]}" "127.0.0.1:${M[1]}" "127.0.0.1:${M[2]}" \
  --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 1 100); do
  redis-cli -p "${M[0]}" cluster info | grep -q cluster_state:ok && break; sleep 0.1
done
CLUSTER="redis+cluster://127.0.0.1:${M[0]},127.0.0.1:${M[1]},127.0.0.1:${M[2]}"

# commands MASTER…: total commands processed so far by those masters.
commands() { local n=0; for p in "$@"; do n=$((n + $(redis-cli -p "$p" info stats | awk -F: '/^total_commands_processed/ {print $2+0}'))); done; echo "$n"; }

# run NAME URL PARTITIONS MASTER…
run() {
  local name=$1 url=$2 parts=$3; shift 3
  local prefix="bench:$(date +%s%N):" out rate p spread=()
  for p in "$@"; do spread+=("$(commands "$p")"); done
  out=$(env DATABASE_URL="sqlite://$WORK/$RANDOM.db" REDIS_URL="$url" STAYAFRICA_KEY_PREFIX="$prefix" \
    ${parts:+STAYAFRICA_JOB_PARTITIONS=$parts} RUST_LOG=error \
    "$BIN" jobs bench --jobs "$JOBS" --processes "$PROCESSES" --concurrency "$CONCURRENCY" 2>&1) ||
    { echo "$out" >&2; echo "FATAL: $name failed" >&2; exit 1; }
  rate=$(grep -oE 'jobs_per_sec=[0-9]+' <<<"$out" | cut -d= -f2)
  grep -q "exactly_once=yes" <<<"$out" || { echo "$out" >&2; echo "FATAL: $name: not every job ran exactly once" >&2; exit 1; }
  local i=0 shares="" after=() total=0
  for p in "$@"; do after+=("$(commands "$p")"); total=$((total + after[i] - spread[i])); i=$((i + 1)); done
  for i in "${!after[@]}"; do shares+="${shares:+ / }$(( (after[i] - spread[i]) * 100 / total ))%"; done
  printf '| %s | %s | %s | %s | %s |\n' "$name" "$rate" \
    "$(awk -v t="$total" -v j="$JOBS" 'BEGIN { printf "%.2f", t / j }')" \
    "$shares" "$(cut -d' ' -f1 /proc/loadavg)"
}

echo "CAP=${CAP}% of a core per redis-server, $JOBS jobs, $PROCESSES worker processes x $CONCURRENCY"
echo
echo "| setup | jobs/s | Redis commands per job | share of the commands per master | load |"
echo "|---|---:|---:|---|---:|"
for r in $(seq 1 "$ROUNDS"); do
  run "1 master" "redis://127.0.0.1:$SOLO" "" "$SOLO"
  run "3 masters, 1 partition" "$CLUSTER" 1 "${M[@]}"
  run "3 masters, 6 partitions" "$CLUSTER" "" "${M[@]}"
done
