#!/usr/bin/env python3
"""Uncached request latencies of the property list (scripts/bench-growth.sh).

Usage: growth.py API_BASE CONSOLE_BASE SAMPLES

Before each timed request the console invalidates every property family
(POST /admin/api/cache/invalidate), so each request is a miss computed from
the database. Prints one JSON line: {label: [p50_ms, p99_ms]}.
"""
import datetime
import http.client
import json
import sys
import time
from urllib.parse import urlparse


def conn(base):
    u = urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60)


def main():
    api, console, samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
    a, c = conn(api), conn(console)
    day = lambda n: (datetime.date.today() + datetime.timedelta(days=n)).isoformat()
    # The first page gives a cursor deep into the catalogue.
    queries = {
        "no filter, page 2": "/api/v1/properties?page=2",
        "city": "/api/v1/properties?city=Nairobi",
        "country": "/api/v1/properties?country=Kenya",
        "price range": "/api/v1/properties?min_price=100.00&max_price=120.00",
        "guests": "/api/v1/properties?guests=6",
        "city + price + guests": "/api/v1/properties?city=Nairobi&min_price=50.00&max_price=150.00&guests=2",
        "dates": f"/api/v1/properties?check_in={day(30)}&check_out={day(33)}",
        "page 400": "/api/v1/properties?page=400&page_size=25",
    }
    out = {}
    for label, path in list(queries.items()) + [("detail miss", None)]:
        times = []
        for i in range(samples):
            c.request("POST", "/admin/api/cache/invalidate", body=json.dumps({"family": "property_list"}),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse(); r.read()
            p = path if path else f"/api/v1/properties/{1000 + i}"
            t = time.perf_counter()
            a.request("GET", p)
            r = a.getresponse(); body = r.read()
            times.append((time.perf_counter() - t) * 1000)
            if r.status != 200:
                raise SystemExit(f"{label}: {r.status} {body[:200]!r}")
        times.sort()
        out[label] = [round(times[len(times) // 2], 2), round(times[min(len(times) - 1, int(len(times) * 0.99))], 2)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
