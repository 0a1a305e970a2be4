#!/usr/bin/env python3
"""Summarises benches/dns_vs_unbound.sh results.

Input: RESULTS (TSV: config server run qps sent completed lost avg_s stddev_s) and LATDIR with
one file per (config, server) of per-query latencies in seconds (`lat-<config>-<server>.txt`)
plus `rate-<config>.txt` (the offered load of the latency runs). Prints median and range of qps,
lost queries, latency and the Ferryman/unbound ratio per configuration.
"""
import os
import statistics
import sys


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def main():
    results, latdir = sys.argv[1], sys.argv[2]
    rows = {}
    order = []
    with open(results) as f:
        for line in f:
            c, s, run, qps, sent, done, lost, avg, sd = line.split("\t")
            key = (c, s)
            if key not in rows:
                rows[key] = []
                order.append(key)
            rows[key].append(dict(qps=float(qps), sent=int(sent), lost=int(lost),
                                  avg=float(avg), sd=float(sd)))
    configs = []
    for c, _ in order:
        if c not in configs:
            configs.append(c)
    for c in configs:
        rate_file = os.path.join(latdir, f"rate-{c}.txt")
        rate = open(rate_file).read().strip() if os.path.exists(rate_file) else "?"
        print(f"\n== {c} ==")
        print(f"{'server':<9} {'runs':>4} {'qps median':>11} {'qps range':>19} "
              f"{'lost median':>12} {'lost max':>12} {'avg lat ms':>10} {'sd ms':>6}   "
              f"latency ms at {rate} qps: p50 / p90 / p99 / p99.9 (n)")
        med = {}
        for s in ("ferryman", "unbound"):
            r = rows.get((c, s))
            if not r:
                continue
            qps = [x["qps"] for x in r]
            lost_pct = [100.0 * x["lost"] / x["sent"] if x["sent"] else 0.0 for x in r]
            lost = [x["lost"] for x in r]
            med[s] = statistics.median(qps)
            lat = []
            lf = os.path.join(latdir, f"lat-{c}-{s}.txt")
            if os.path.exists(lf):
                with open(lf) as f:
                    lat = sorted(float(v) for v in f if v.strip())
            latstr = " / ".join(f"{1000 * pct(lat, p):.3f}" for p in (50, 90, 99, 99.9))
            print(f"{s:<9} {len(r):>4} {med[s]:>11.0f} {min(qps):>9.0f}-{max(qps):<9.0f} "
                  f"{statistics.median(lost):>6.0f} ({statistics.median(lost_pct):.3f}%) "
                  f"{max(lost):>5} ({max(lost_pct):.3f}%) "
                  f"{1000 * statistics.median(x['avg'] for x in r):>10.3f} "
                  f"{1000 * statistics.median(x['sd'] for x in r):>6.3f}   {latstr} ({len(lat)})")
        if med.get("unbound"):
            if med.get("ferryman"):
                print(f"ratio ferryman/unbound (median qps): {med['ferryman'] / med['unbound']:.2f}x")


if __name__ == "__main__":
    main()
