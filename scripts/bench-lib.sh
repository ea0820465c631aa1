# Helpers shared by the benchmark scripts (sourced, not run).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http URL: returns once URL answers 2xx, or exits after 30 s.
wait_http() { for _ in $(seq 1 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "FATAL: $1 did not answer" >&2; exit 1; }

# wrk's latency figure in milliseconds ("850.00us", "3.21ms", "1.02s").
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.2f", v }' <<<"$1"; }

# path_of SCENARIO: the request path of a cached-GET scenario.
path_of() {
  case $1 in
    featured) echo "/api/v1/properties/featured" ;;
    list) echo "/api/v1/properties?city=Nairobi&page=2" ;;
    detail) echo "/api/v1/properties/42" ;;
    dashboard) echo "/api/v1/dashboard" ;;
    *) echo "unknown scenario $1" >&2; exit 1 ;;
  esac
}
