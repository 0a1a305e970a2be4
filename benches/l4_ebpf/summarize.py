#!/usr/bin/env python3
"""Summarises benches/l4_ebpf_vs_iptables.sh.

    summarize.py RESULTS.tsv SYNC.txt [SKIPPED ...]

RESULTS.tsv lines (benches/l4/parse_wrk.py): scenario way round rps p50_us p99_us errors non_2xx,
scenario = "ka-N" (keep-alive: req/s) or "close-N" (Connection: close: new connections/s).
SYNC.txt: the lines of Ferryman's log about the fast path's map sync, prefixed "N services: ".
SKIPPED: "N way reason" for cells that were not measured.

Prints per service count, mode and way: runs, median and range of the rate, the ratio to direct
(the median over rounds of rate / direct's rate in the same round, and its range), median p50/p99
latency, errors (socket errors + non-2xx). Then the issue's goals: eBPF >= 0.95x direct at every
count and mode; how iptables' ratio moves with the count; the median full map sync time of the
largest count (every "fastpath synced" line with added=N) <= 100 ms.
"""
import re
import statistics
import sys
from collections import defaultdict

WAYS = ["direct", "ebpf", "iptables", "userspace"]
MODES = {"ka": "keep-alive req/s", "close": "close conns/s"}
EBPF_GOAL = 0.95
SYNC_GOAL_MS = 100.0

rows = defaultdict(dict)  # (n, mode, way) -> {round: (rps, p50, p99, errors)}
with open(sys.argv[1]) as f:
    for line in f:
        parts = line.split()
        if len(parts) != 8:
            continue
        sc, way, rnd, rps, p50, p99, errs, non2xx = parts
        mode, n = sc.split("-", 1)
        rows[(int(n), mode, way)][int(rnd)] = (float(rps), float(p50), float(p99),
                                                int(errs) + int(non2xx))
sync_lines = open(sys.argv[2]).read().splitlines() if len(sys.argv) > 2 else []
skipped = sys.argv[3:]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


counts = sorted({k[0] for k in rows})
ratio = {}  # (n, mode, way) -> median same-round ratio to direct
print(f"{'services':>8} {'mode':<17} {'way':<10} {'runs':>4} {'median':>9} {'min-max':>15} "
      f"{'x direct':>8} {'x range':>11} {'p50 us':>7} {'p99 us':>7} {'errors':>6}")
for n in counts:
    for mode in MODES:
        direct = rows.get((n, mode, "direct"), {})
        for way in WAYS:
            rs = rows.get((n, mode, way))
            if not rs:
                continue
            rps = [r[0] for r in rs.values()]
            ratios = [rs[k][0] / direct[k][0] for k in rs if k in direct and direct[k][0] > 0]
            ratio[(n, mode, way)] = med(ratios)
            xr = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"
            xd = f"{med(ratios):.2f}" if ratios else "-"
            print(f"{n:>8} {MODES[mode]:<17} {way:<10} {len(rps):>4} {med(rps):>9.0f} "
                  f"{f'{min(rps):.0f}-{max(rps):.0f}':>15} {xd:>8} {xr:>11} "
                  f"{med([r[1] for r in rs.values()]):>7.0f} {med([r[2] for r in rs.values()]):>7.0f} "
                  f"{sum(r[3] for r in rs.values()):>6}")
    print()

for s in skipped:
    print(f"not measured: {s}")
if skipped:
    print()

print("goals")
for n in counts:
    for mode in MODES:
        r = ratio.get((n, mode, "ebpf"))
        if r is None or r != r:
            print(f"  ebpf >= {EBPF_GOAL}x direct, {n} services, {mode}: not measured")
        else:
            verdict = "ok" if r >= EBPF_GOAL else "MISSED"
            print(f"  ebpf >= {EBPF_GOAL}x direct, {n} services, {mode}: {r:.2f} {verdict}")
for mode in MODES:
    seq = [(n, ratio[(n, mode, "iptables")]) for n in counts if (n, mode, "iptables") in ratio]
    if seq:
        trail = ", ".join(f"{n}: {r:.2f}" for n, r in seq)
        print(f"  iptables x direct by services, {mode}: {trail}")

largest = max(counts) if counts else None
samples = []  # elapsed_ms of every full sync logged at the largest count
for line in sync_lines:
    # src/fastpath/run.rs logs "fastpath synced ... added=N ... elapsed_ms=12.3" (tracing's fmt).
    if largest is not None and line.startswith(f"{largest} services:") \
            and re.search(rf"\badded={largest}\b", line):
        samples += [float(v) for v in re.findall(r"\belapsed_ms=([0-9]+(?:\.[0-9]+)?)", line)]
print("map sync (ferryman's log: fastpath synced, from empty maps)")
for line in sync_lines:
    n, _, rest = line.partition(":")
    print(f"  {n}: {rest[rest.find('fastpath sync'):] if 'fastpath sync' in rest else rest.strip()}")
if largest is None or not sync_lines:
    print("  no map sync line logged")
elif not samples:
    print(f"  {largest} services: no full sync with elapsed_ms in the lines above")
else:
    m = med(samples)
    verdict = "ok" if m <= SYNC_GOAL_MS else "MISSED"
    print(f"  {largest} services: map sync median {m:.1f} ms, range {min(samples):.1f}-"
          f"{max(samples):.1f} ms over {len(samples)} loads (goal <= {SYNC_GOAL_MS:.0f} ms) {verdict}")
