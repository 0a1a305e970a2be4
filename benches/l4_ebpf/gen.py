#!/usr/bin/env python3
"""Writes the inputs of benches/l4_ebpf_vs_iptables.sh for one service count into WORK.

    gen.py WORK --services N --backends IP0,IP1,IP2 [--port 80] [--nginx-workers W]

- nginx.conf: one nginx (W workers) listening on every backend address at PORT, answering 200
  "ok\\n" (written only with --nginx).
- apps.json: a Marathon /v2/apps?embed=apps.tasks document with N apps, app k with the IP VIP
  vip(k):PORT (label VIP_0) and the 3 backends as its tasks. No HAPROXY_GROUP label, so Ferryman
  opens no service-port listener: only VIPs. The benchmark targets the last app's VIP; the others
  are filler that the kernel maps, the iptables chain and the user-space listeners still hold.
- iptables.rules: an `iptables-restore` file for the nat table, shaped like kube-proxy's iptables
  mode: OUTPUT jumps to KUBE-SERVICES, one rule per service matching VIP:PORT/tcp and jumping to
  that service's KUBE-SVC chain, which picks a backend with `-m statistic --mode random`
  (probabilities 1/3, 1/2, rest) and DNATs to it. Services are listed in order, so the targeted
  (last) VIP is matched after N-1 non-matching rules: the linear walk every new connection pays.

vip(k) = 11.1.(k // 256).(k % 256), so N <= 65536.
"""
import argparse
import json
import os

p = argparse.ArgumentParser()
p.add_argument("work")
p.add_argument("--services", type=int, required=True)
p.add_argument("--backends", required=True)
p.add_argument("--port", type=int, default=80)
p.add_argument("--nginx", action="store_true", help="also write nginx.conf")
p.add_argument("--nginx-workers", type=int, default=1)
a = p.parse_args()
if not 1 <= a.services <= 65536:
    p.error("--services must be in 1..65536")
backends = a.backends.split(",")
w = a.work


def vip(k):
    return f"11.1.{k // 256}.{k % 256}"


if a.nginx:
    with open(os.path.join(w, "nginx.conf"), "w") as f:
        listens = "\n".join(f"    listen {ip}:{a.port} reuseport backlog=8192;" for ip in backends)
        f.write(f"""daemon off;
worker_processes {a.nginx_workers};
pid {w}/nginx.pid;
error_log {w}/nginx-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16000; }}
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path {w}/body; proxy_temp_path {w}/proxy; fastcgi_temp_path {w}/fastcgi;
  uwsgi_temp_path {w}/uwsgi; scgi_temp_path {w}/scgi;
  server {{
{listens}
    location / {{ return 200 "ok\\n"; }}
  }}
}}
""")

apps = []
for k in range(a.services):
    tasks = []
    for i, ip in enumerate(backends):
        tid = f"svc{k}.task-{i}"
        tasks.append({
            "id": tid, "appId": f"/svc{k}", "host": ip, "slaveId": f"agent-{i}",
            "ports": [a.port], "ipAddresses": [{"ipAddress": ip, "protocol": "IPv4"}],
            "state": "TASK_RUNNING", "startedAt": "2026-01-12T09:30:03.000Z",
            "version": "2026-01-12T09:30:00.000Z",
        })
    apps.append({
        "id": f"/svc{k}", "instances": len(tasks), "labels": {},
        "portDefinitions": [{"port": 10000 + k, "protocol": "tcp", "name": "main",
                             "labels": {"VIP_0": f"{vip(k)}:{a.port}"}}],
        "healthChecks": [], "version": "2026-01-12T09:30:00.000Z", "tasks": tasks,
    })
with open(os.path.join(w, "apps.json.tmp"), "w") as f:
    json.dump({"apps": apps}, f)
os.replace(os.path.join(w, "apps.json.tmp"), os.path.join(w, "apps.json"))

lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
         ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]"]
lines += [f":KUBE-SVC-{k} - [0:0]" for k in range(a.services)]
lines.append("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES")
for k in range(a.services):
    lines.append(f"-A KUBE-SERVICES -d {vip(k)}/32 -p tcp -m comment --comment \"svc{k} cluster IP\" "
                 f"-m tcp --dport {a.port} -j KUBE-SVC-{k}")
for k in range(a.services):
    n = len(backends)
    for i, ip in enumerate(backends):
        stat = ""
        if i < n - 1:
            stat = f"-m statistic --mode random --probability {1 / (n - i):.11f} "
        lines.append(f"-A KUBE-SVC-{k} {stat}-p tcp -j DNAT --to-destination {ip}:{a.port}")
lines.append("COMMIT")
with open(os.path.join(w, "iptables.rules"), "w") as f:
    f.write("\n".join(lines) + "\n")
