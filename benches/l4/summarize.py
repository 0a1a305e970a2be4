#!/usr/bin/env python3
"""Summarises benches/l4_vs_haproxy.sh results.

    summarize.py RESULTS.tsv [RSS.tsv]

RESULTS.tsv lines: scenario target run rps p50_us p99_us socket_errors non_2xx
RSS.tsv lines:     target conns rss_before_kib rss_after_kib backend_conns

Prints per scenario and target: median and range of req/s (conns/s for the short-connection
scenarios), median p50/p99 latency, errors, and the ratios of median req/s to HAProxy's and to
direct (wrk straight to nginx); p99 ratio to HAProxy's. Then RSS per 1000 idle connections.
"""
import statistics
import sys
from collections import defaultdict

ORDER = ["direct", "haproxy", "ferryman"]
rows = defaultdict(list)
scenarios = []
with open(sys.argv[1]) as f:
    for line in f:
        parts = line.split()
        if len(parts) != 8:
            continue
        sc, target, _run, rps, p50, p99, errs, non2xx = parts
        if sc not in scenarios:
            scenarios.append(sc)
        rows[(sc, target)].append((float(rps), float(p50), float(p99), int(errs), int(non2xx)))


def med(xs):
    return statistics.median(xs) if xs else float("nan")


print(f"{'scenario':<16} {'target':<9} {'runs':>4} {'median/s':>10} {'range/s':>21} "
      f"{'p50 us':>8} {'p99 us':>8} {'errors':>6} {'x haproxy':>9} {'x direct':>8} {'p99 x hap':>9}")
for sc in scenarios:
    base = {t: med([r[0] for r in rows[(sc, t)]]) for t in ORDER if rows.get((sc, t))}
    p99s = {t: med([r[2] for r in rows[(sc, t)]]) for t in ORDER if rows.get((sc, t))}
    for t in ORDER:
        rs = rows.get((sc, t))
        if not rs:
            continue
        rps = [r[0] for r in rs]
        m = med(rps)
        errs = sum(r[3] + r[4] for r in rs)
        xh = m / base["haproxy"] if base.get("haproxy") else float("nan")
        xd = m / base["direct"] if base.get("direct") else float("nan")
        p99h = p99s[t] / p99s["haproxy"] if p99s.get("haproxy") else float("nan")
        rng = f"{min(rps):.0f}-{max(rps):.0f}"
        print(f"{sc:<16} {t:<9} {len(rs):>4} {m:>10.0f} {rng:>21} {med([r[1] for r in rs]):>8.0f} "
              f"{p99s[t]:>8.0f} {errs:>6} {xh:>9.2f} {xd:>8.2f} {p99h:>9.2f}")

if len(sys.argv) > 2:
    print()
    print(f"{'target':<9} {'idle conns':>10} {'backend conns':>13} {'RSS before KiB':>14} "
          f"{'RSS after KiB':>13} {'KiB per 1000':>12}")
    rss = {}
    with open(sys.argv[2]) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 5:
                continue
            t, n, before, after, backend = parts
            per = (int(after) - int(before)) * 1000 / int(n)
            rss.setdefault(t, []).append(per)
            print(f"{t:<9} {n:>10} {backend:>13} {before:>14} {after:>13} {per:>12.0f}")
    if "haproxy" in rss and "ferryman" in rss:
        print(f"ferryman/haproxy RSS per 1000 idle connections: "
              f"{med(rss['ferryman']) / med(rss['haproxy']):.2f}")
