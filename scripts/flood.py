#!/usr/bin/env python3
"""A flood of sign-ins from many loopback addresses (scripts/bench-flood.sh).

Usage: flood.py BASE_URL SECONDS ADDRESSES CONNS_PER_ADDRESS

Each connection, bound to its own 127.0.9.N address, sends registrations
and logins with unknown emails in turn (both hash a password) as fast as
the service answers, until SECONDS have passed. Prints one JSON object:
answers per status and requests sent.
"""
import http.client
import json
import sys
import threading
import time
import uuid
from collections import Counter
from urllib.parse import urlparse


def worker(host, port, source, until, counts, lock):
    conn = None
    local = Counter()
    n = 0
    while time.time() < until:
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=30, source_address=(source, 0))
        n += 1
        tag = uuid.uuid4().hex[:12]
        if n % 2:
            path, body = "/api/v1/auth/register", {
                "email": f"flood-{tag}@example.com", "password": "password123",
                "full_name": "Flood", "role": "guest"}
        else:
            path, body = "/api/v1/auth/login", {
                "email": f"nobody-{tag}@example.com", "password": "password123"}
        try:
            conn.request("POST", path, body=json.dumps(body),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            local[r.status] += 1
        except Exception:
            local["error"] += 1
            conn.close()
            conn = None
    with lock:
        counts.update(local)


def main():
    base, seconds, addresses, conns = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    u = urlparse(base)
    until = time.time() + seconds
    counts, lock, threads = Counter(), threading.Lock(), []
    for a in range(addresses):
        source = f"127.0.9.{a + 1}"
        for _ in range(conns):
            t = threading.Thread(target=worker, args=(u.hostname, u.port, source, until, counts, lock))
            t.start()
            threads.append(t)
    for t in threads:
        t.join()
    print(json.dumps({"answers": {str(k): v for k, v in sorted(counts.items(), key=str)},
                      "sent": sum(counts.values())}))


if __name__ == "__main__":
    main()
