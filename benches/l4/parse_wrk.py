#!/usr/bin/env python3
"""Reads one `wrk --latency` output on stdin and prints one results line:

    scenario target run rps p50_us p99_us socket_errors non_2xx

    parse_wrk.py SCENARIO TARGET RUN < wrk.out
"""
import re
import sys

text = sys.stdin.read()


def us(value, unit):
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


m = re.search(r"Requests/sec:\s+([\d.]+)", text)
if not m:
    sys.exit(f"no Requests/sec in wrk output:\n{text}")
rps = float(m.group(1))
lat = {m.group(1): us(m.group(2), m.group(3))
       for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
errors = 0
socket_line = re.search(r"Socket errors:.*", text)
if socket_line:
    errors = sum(int(x) for x in re.findall(r"\b(\d+)\b", socket_line.group(0)))
non2xx_line = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
non2xx = int(non2xx_line.group(1)) if non2xx_line else 0
print(sys.argv[1], sys.argv[2], sys.argv[3], f"{rps:.1f}", f"{lat.get('50', 0):.0f}",
      f"{lat.get('99', 0):.0f}", errors, non2xx)
