#!/usr/bin/env python3
"""Generates the benchmark zone for benches/dns_vs_unbound.sh, twice:

  state.json        a Mesos master /master/state for Ferryman (discovery.source = "file")
  unbound-zone.conf the SAME names as unbound `local-data` in `local-zone: "mesos." static`
  queries.txt       a dnsperf query file: A hits, SRV hits and NXDOMAIN misses, shuffled
  names.txt         one "name type rcode answers" line per distinct query, for sanity checks

Names follow mesosphere/mesos-dns records/generator.go for a running task without
DiscoveryInfo and with one port (8 names per task):

  A    <task>.<fw>.mesos.                     task IP (netinfo)
  A    <task>-<hash>-<agenttail>.<fw>.mesos.  task IP         (canonical)
  A    <task>.<fw>.slave.mesos.               agent IP
  A    <canonical>.<fw>.slave.mesos.          agent IP
  SRV  _<task>._tcp|_udp.<fw>.mesos.          0 0 port <canonical>.<fw>.slave.mesos.
  SRV  _<task>._tcp|_udp.<fw>.slave.mesos.    same

hash = first 5 chars of z-base-32(SHA-1(task id)); agenttail = last '-' field of the agent ID,
lowercased. Plus the zone's SOA/NS and the leader/master/slave names.

Usage: gen_zone.py OUTDIR [--tasks N] [--queries Q] [--seed S] [--ttl T]
"""
import argparse
import hashlib
import json
import os
import random

ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"


def zbase32(data: bytes) -> str:
    bits = int.from_bytes(data, "big")
    nbits = len(data) * 8
    pad = (5 - nbits % 5) % 5
    bits <<= pad
    nbits += pad
    return "".join(ZBASE32[(bits >> (nbits - 5 * (i + 1))) & 31] for i in range(nbits // 5))


def task_hash(task_id: str) -> str:
    return zbase32(hashlib.sha1(task_id.encode()).digest())[:5]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--tasks", type=int, default=1250, help="8 names per task (1250 -> 10 000)")
    ap.add_argument("--agents", type=int, default=10)
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ttl", type=int, default=60)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    dom, fw, ttl, port = "mesos", "marathon", a.ttl, 31000

    agents = [
        {"id": f"bench0000-0000-0000-0000-000000000000-S{k}", "ip": f"10.0.1.{k + 1}"}
        for k in range(a.agents)
    ]
    tasks, a_hits, srv_hits = [], [], []
    local = []  # unbound local-data lines (rr text)

    def rr(name, rtype, rdata):
        local.append(f"{name} {ttl} IN {rtype} {rdata}")

    for i in range(a.tasks):
        agent = agents[i % len(agents)]
        name = f"app-{i:05d}"
        tid = f"{name}.{i:08x}-1111-2222-3333-444455556666"
        ip = f"10.{16 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        tasks.append({
            "id": tid,
            "name": name,
            "framework_id": "bench-fw-marathon",
            "slave_id": agent["id"],
            "state": "TASK_RUNNING",
            "resources": {"ports": f"[{port}-{port}]"},
            "statuses": [{
                "state": "TASK_RUNNING",
                "timestamp": 1.0,
                "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": ip}]}]},
            }],
        })
        tail = agent["id"].split("-")[-1].lower()
        canonical = f"{name}-{task_hash(tid)}-{tail}"
        for host, addr in [
            (f"{name}.{fw}.{dom}.", ip),
            (f"{canonical}.{fw}.{dom}.", ip),
            (f"{name}.{fw}.slave.{dom}.", agent["ip"]),
            (f"{canonical}.{fw}.slave.{dom}.", agent["ip"]),
        ]:
            rr(host, "A", addr)
            a_hits.append(host)
        target = f"{canonical}.{fw}.slave.{dom}."
        for proto in ("_tcp", "_udp"):
            for sub in (f"{fw}.{dom}.", f"{fw}.slave.{dom}."):
                srv = f"_{name}.{proto}.{sub}"
                rr(srv, "SRV", f"0 0 {port} {target}")
                srv_hits.append(srv)

    # Cluster-wide names (generator.go: leader, master, masterN, slave, framework, ns).
    leader_ip = "10.0.0.1"
    for host, addr in [
        (f"leader.{dom}.", leader_ip),
        (f"master.{dom}.", leader_ip),
        (f"master0.{dom}.", leader_ip),
        (f"{fw}.{dom}.", leader_ip),
        (f"ns1.{dom}.", "127.0.0.1"),
    ] + [(f"slave.{dom}.", ag["ip"]) for ag in agents]:
        rr(host, "A", addr)
    for proto in ("_tcp", "_udp"):
        rr(f"_leader.{proto}.{dom}.", "SRV", f"0 0 5050 leader.{dom}.")
    rr(f"{dom}.", "NS", f"ns1.{dom}.")
    rr(f"{dom}.", "SOA", f"ns1.{dom}. root.ns1.{dom}. 1 60 600 86400 60")

    state = {
        "hostname": "10.0.0.1",
        "pid": "master@10.0.0.1:5050",
        "leader": "master@10.0.0.1:5050",
        "frameworks": [{
            "id": "bench-fw-marathon",
            "name": fw,
            "hostname": leader_ip,
            "pid": f"scheduler-1@{leader_ip}:40000",
            "active": True,
            "tasks": tasks,
        }],
        "slaves": [
            {"id": ag["id"], "hostname": ag["ip"], "pid": f"slave(1)@{ag['ip']}:5051", "active": True}
            for ag in agents
        ],
    }
    os.makedirs(a.outdir, exist_ok=True)
    with open(os.path.join(a.outdir, "state.json"), "w") as f:
        json.dump(state, f)
    with open(os.path.join(a.outdir, "unbound-zone.conf"), "w") as f:
        f.write(f'  local-zone: "{dom}." static\n')
        for line in local:
            f.write(f'  local-data: "{line}"\n')

    # Query mix: 60 % A hits, 20 % SRV hits, 20 % NXDOMAIN misses.
    queries, seen = [], {}
    for _ in range(a.queries):
        r = rnd.random()
        if r < 0.6:
            q = (rnd.choice(a_hits), "A", "NOERROR", 1)
        elif r < 0.8:
            q = (rnd.choice(srv_hits), "SRV", "NOERROR", 1)
        else:
            q = (f"nope-{rnd.randrange(10**6):06d}.{fw}.{dom}.", "A", "NXDOMAIN", 0)
        queries.append(q)
        seen[(q[0], q[1])] = q
    with open(os.path.join(a.outdir, "queries.txt"), "w") as f:
        for name, qtype, _, _ in queries:
            f.write(f"{name} {qtype}\n")
    with open(os.path.join(a.outdir, "names.txt"), "w") as f:
        for name, qtype, rcode, n in seen.values():
            f.write(f"{name} {qtype} {rcode} {n}\n")
    print(f"{len(local)} records for {len(a_hits) + len(srv_hits)} task names "
          f"({a.tasks} tasks), {len(queries)} queries")


if __name__ == "__main__":
    main()
