#!/usr/bin/env python3
"""Reads one h2load output on stdin (and its --log-file) and prints one results line in the format
of benches/l4/parse_wrk.py:

    scenario target run rps p50_us p99_us errors non_2xx

    parse_h2load.py SCENARIO TARGET RUN LOGFILE < h2load.out

h2load itself prints only min/max/mean/sd of the request time; p50/p99 come from its per-request
log (--log-file: start time, status, microseconds until the end of the response). errors =
failed + errored + timeout requests; non_2xx = 3xx + 4xx + 5xx answers.
"""
import re
import sys

text = sys.stdin.read()
m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text)
if not m:
    sys.exit(f"no req/s in h2load output:\n{text}")
rps = float(m.group(1))
req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                r"(\d+) errored, (\d+) timeout", text)
errors = sum(int(x) for x in req.groups()[4:]) if req else 0
codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
non2xx = sum(int(x) for x in codes.groups()[1:]) if codes else 0

lat = []
with open(sys.argv[4]) as f:
    for line in f:
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1] != "-1":
            lat.append(int(parts[2]))
lat.sort()


def pct(q):
    if not lat:
        return 0.0
    return float(lat[min(len(lat) - 1, int(q * len(lat)))])


print(sys.argv[1], sys.argv[2], sys.argv[3], f"{rps:.1f}", f"{pct(0.50):.0f}", f"{pct(0.99):.0f}",
      errors, non2xx)
