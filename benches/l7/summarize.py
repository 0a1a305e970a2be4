#!/usr/bin/env python3
"""Summarises benches/l7_vs_peers.sh.

    summarize.py RESULTS.tsv CPU.tsv RSS.tsv CLK_TCK

RESULTS.tsv lines (benches/l4/parse_wrk.py, benches/l7/parse_h2load.py):
    case target round rps p50_us p99_us errors non_2xx
CPU.tsv lines: case target round cpu_ticks requests   (the proxy's utime+stime over the run)
RSS.tsv lines: target idle_conns rss_before_kib rss_after_kib pss_after_kib established closed
               backend_conns

Prints per case and target: rounds, median req/s and its range (min-max), median over rounds of
p50 and p99, errors (socket errors + non-2xx), the ratios Ferryman/HAProxy and Ferryman/nginx of
the median req/s, the p99 ratio to HAProxy's, and the proxy's own CPU time per request (median
over rounds; on a 2-core machine the load generator and the backends share one core and can cap
every proxy near the same rate, and this is where their cost still shows). Then memory with the
idle keep-alive connections open, and the issue's goals (Ferryman >= 1.0x HAProxy and nginx req/s
over HTTP and HTTPS, p99 <= HAProxy's, RSS <= HAProxy's).
"""
import statistics
import sys
from collections import defaultdict

TARGETS = ["haproxy", "nginx", "ferryman"]
CASES = {
    "http-ka": "HTTP/1.1 keep-alive",
    "http-close": "HTTP/1.1 Connection: close",
    "https-ka": "HTTPS keep-alive",
    "h2": "HTTP/2 over TLS (h2load)",
}
GOAL_CASES = ["http-ka", "http-close", "https-ka", "h2"]

rows = defaultdict(list)  # (case, target) -> [(rps, p50, p99, errors)]
cases = []
with open(sys.argv[1]) as f:
    for line in f:
        parts = line.split()
        if len(parts) != 8:
            continue
        c, t, _r, rps, p50, p99, errs, non2xx = parts
        if c not in cases:
            cases.append(c)
        rows[(c, t)].append((float(rps), float(p50), float(p99), int(errs) + int(non2xx)))

ticks = float(sys.argv[4]) if len(sys.argv) > 4 else 100.0
cpu = defaultdict(list)  # (case, target) -> [us per request]
if len(sys.argv) > 2:
    with open(sys.argv[2]) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 5 and int(parts[4]) > 0:
                cpu[(parts[0], parts[1])].append(int(parts[3]) / ticks * 1e6 / int(parts[4]))


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_ratio(x):
    return "-" if x != x else f"{x:.2f}"


medians = {}  # (case, target) -> (rps, p50, p99, errors)
for key, rs in rows.items():
    medians[key] = (med([r[0] for r in rs]), med([r[1] for r in rs]), med([r[2] for r in rs]),
                    sum(r[3] for r in rs))

if cases:
    print(f"{'case':<28} {'proxy':<9} {'rounds':>6} {'median/s':>9} {'range/s':>13} {'p50 us':>7} "
          f"{'p99 us':>7} {'errors':>6} {'F/HAP':>6} {'F/nginx':>7} {'p99 x HAP':>9} {'cpu us/req':>10}")
for c in cases:
    for t in TARGETS:
        rs = rows.get((c, t))
        if not rs:
            continue
        rps = [r[0] for r in rs]
        m, p50, p99, errs = medians[(c, t)]
        fh = fn = ph = float("nan")
        if t == "ferryman":
            if (c, "haproxy") in medians:
                fh = m / medians[(c, "haproxy")][0]
            if (c, "nginx") in medians:
                fn = m / medians[(c, "nginx")][0]
        if (c, "haproxy") in medians and medians[(c, "haproxy")][2] > 0:
            ph = p99 / medians[(c, "haproxy")][2]
        cu = med(cpu.get((c, t), []))
        print(f"{CASES.get(c, c):<28} {t:<9} {len(rs):>6} {m:>9.0f} "
              f"{f'{min(rps):.0f}-{max(rps):.0f}':>13} {p50:>7.0f} {p99:>7.0f} {errs:>6} "
              f"{fmt_ratio(fh):>6} {fmt_ratio(fn):>7} {fmt_ratio(ph):>9} "
              f"{'-' if cu != cu else f'{cu:.1f}':>10}")
    print()
if any(c == "h2" for c in cases):
    print("h2: p50/p99 from h2load's per-request log (--log-file); its own output has only "
          "min/max/mean/sd.\n")

rss = {}
if len(sys.argv) > 3:
    with open(sys.argv[3]) as f:
        lines = [line.split() for line in f if len(line.split()) == 8]
    if lines:
        print(f"{'proxy':<9} {'idle conns':>10} {'established':>11} {'closed early':>12} "
              f"{'to backends':>11} {'RSS idle KiB':>12} {'RSS KiB':>9} {'PSS KiB':>9} {'KiB/conn':>8}")
    for t, n, before, after, pss, est, closed, backend in lines:
        rss[t] = int(after)
        per = (int(after) - int(before)) / int(n)
        print(f"{t:<9} {n:>10} {est:>11} {closed:>12} {backend:>11} {before:>12} {after:>9} {pss:>9} {per:>8.2f}")
    if lines:
        print("RSS: VmRSS summed over the proxy's processes (nginx: master + workers) with the "
              "connections open; PSS counts pages shared between them once.")
        if "ferryman" in rss:
            for peer in ("haproxy", "nginx"):
                if peer in rss:
                    print(f"ferryman/{peer} RSS with the idle connections: "
                          f"{rss['ferryman'] / rss[peer]:.2f}")
        print()

if any(t == "ferryman" for _c, t in rows) or "ferryman" in rss:
    print("goals (issue 8)")
    for c in GOAL_CASES:
        f = medians.get((c, "ferryman"))
        if not f:
            continue
        for peer in ("haproxy", "nginx"):
            p = medians.get((c, peer))
            if p:
                r = f[0] / p[0]
                print(f"  req/s {CASES[c]}: ferryman/{peer} {r:.2f} (>= 1.0) "
                      f"{'ok' if r >= 1.0 else 'MISSED'}")
        h = medians.get((c, "haproxy"))
        if h:
            print(f"  p99 {CASES[c]}: ferryman {f[2]:.0f} us vs haproxy {h[2]:.0f} us (<=) "
                  f"{'ok' if f[2] <= h[2] else 'MISSED'}")
    if "ferryman" in rss and "haproxy" in rss:
        print(f"  RSS at idle connections: ferryman {rss['ferryman']} KiB vs haproxy "
              f"{rss['haproxy']} KiB (<=) {'ok' if rss['ferryman'] <= rss['haproxy'] else 'MISSED'}")
    errs = sum(m[3] for (c, t), m in medians.items() if t == "ferryman")
    print(f"  ferryman errors over all runs: {errs} {'ok' if errs == 0 else 'MISSED'}")
