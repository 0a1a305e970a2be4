#!/usr/bin/env python3
"""Writes the configs of benches/l4_vs_haproxy.sh into WORK for one scenario.

    gen.py WORK --services N --ferryman-base P --haproxy-base Q --backends B0,B1,B2 \
           --threads T [--nginx-workers W]

- nginx.conf: one nginx (W workers) listening on each backend port, answering 200 "ok\\n".
- apps.json: a Marathon /v2/apps?embed=apps.tasks document with N apps (HAPROXY_GROUP external,
  service port P+k, TCP mode), each with 3 tasks on 127.0.0.1 at the backend ports; Ferryman
  serves them on l4.bind = 127.0.0.1 (service ports, no VIP link needed).
- haproxy.cfg: the same N listeners in `mode tcp` on ports Q+k, `balance roundrobin` over the
  same backends, `nbthread T`, the same connect/idle timeouts as Ferryman's config.
"""
import argparse
import json
import os

p = argparse.ArgumentParser()
p.add_argument("work")
p.add_argument("--services", type=int, required=True)
p.add_argument("--ferryman-base", type=int, required=True)
p.add_argument("--haproxy-base", type=int, required=True)
p.add_argument("--backends", required=True)
p.add_argument("--threads", type=int, required=True)
p.add_argument("--nginx-workers", type=int, default=1)
a = p.parse_args()
backends = [int(x) for x in a.backends.split(",")]
w = a.work

with open(os.path.join(w, "nginx.conf"), "w") as f:
    listens = "\n".join(f"    listen 127.0.0.1:{port} reuseport backlog=8192;" for port in backends)
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
    for i, port in enumerate(backends):
        tid = f"svc{k}.task-{i}"
        tasks.append({
            "id": tid, "appId": f"/svc{k}", "host": "127.0.0.1", "slaveId": "agent-0",
            "ports": [port], "ipAddresses": [{"ipAddress": "127.0.0.1", "protocol": "IPv4"}],
            "state": "TASK_RUNNING", "startedAt": "2026-01-12T09:30:03.000Z",
            "version": "2026-01-12T09:30:00.000Z",
        })
    apps.append({
        "id": f"/svc{k}", "instances": len(tasks), "labels": {"HAPROXY_GROUP": "external"},
        "portDefinitions": [{"port": a.ferryman_base + k, "protocol": "tcp", "name": "main"}],
        "healthChecks": [], "version": "2026-01-12T09:30:00.000Z", "tasks": tasks,
    })
with open(os.path.join(w, "apps.json"), "w") as f:
    json.dump({"apps": apps}, f)

with open(os.path.join(w, "haproxy.cfg"), "w") as f:
    f.write(f"""global
  nbthread {a.threads}
  maxconn 8000
  log stdout format raw local0 err

defaults
  mode tcp
  balance roundrobin
  maxconn 8000
  timeout connect 5s
  timeout client 60s
  timeout server 60s
""")
    for k in range(a.services):
        f.write(f"\nlisten s{k}\n  bind 127.0.0.1:{a.haproxy_base + k}\n")
        for i, port in enumerate(backends):
            f.write(f"  server b{i} 127.0.0.1:{port}\n")
