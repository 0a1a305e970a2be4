#!/usr/bin/env python3
"""Writes the configs of benches/l7_vs_peers.sh into WORK.

    gen.py WORK --backends B0,B1,B2 --workers N --cert PEM
           --haproxy H_HTTP,H_HTTPS,H_SVC --nginx N_HTTP,N_HTTPS
           --ferryman F_HTTP,F_HTTPS,F_SVC [--vhost bench.example.com] [--idle-timeout 60]

- backends.conf: one nginx (1 worker) listening on the 3 backend ports, answering 200 with a
  small fixed body ("ok\\n"), keep-alive without a request limit.
- haproxy.cfg: what Marathon-LB generates for one app with HAPROXY_0_VHOST (templates
  HAPROXY_HEAD, HAPROXY_HTTP_FRONTEND_HEAD + HTTP_FRONTEND_ACL, HAPROXY_HTTPS_FRONTEND_HEAD +
  HTTPS_FRONTEND_ACL, FRONTEND_HEAD for the service port, BACKEND_HEAD + BACKEND_HTTP_OPTIONS +
  BACKEND_SERVER_OPTIONS; config.py in mesosphere/marathon-lb), with these deliberate changes,
  each to measure HAProxy at its best rather than at Marathon-LB's defaults:
    * `option http-keep-alive` instead of Marathon-LB's global `option http-server-close`
      (which closes the backend connection after every response; Ferryman and nginx pool them);
    * `timeout http-keep-alive` / client / server = the idle timeout (Marathon-LB: 1 s / 30 s),
      so the 8000 idle keep-alive connections of the RSS test stay open; the same value is set
      on nginx and Ferryman;
    * `nbthread N`, `maxconn 9000` (Marathon-LB: 50000, which needs ~100 000 fds; the hard
      open-files limit here is 20 000 and HAProxy uses 2 fds per proxied connection);
    * `http-reuse always` (HAProxy's default, `safe`, gives the first request of every client
      connection a new backend connection: one backend connect per request in the
      `Connection: close` case, where Ferryman and nginx take one from their pools);
    * `alpn h2,http/1.1` on the TLS bind (HTTP/2 to clients, as Ferryman offers);
    * no stats listener, lua, server-state file, syslog (not on the request path).
- nginx-proxy.conf: nginx as the same reverse proxy: N workers, an upstream with the 3 backends
  (round robin) and `keepalive 64`, HTTP/1.1 to backends, the same X-Forwarded-* headers, a
  server for the vhost on a plain and a TLS port (`ssl http2`, nginx 1.22 syntax) and a default
  server answering 503 for other hosts (HAProxy and Ferryman answer 503 when no backend matches).
- apps.json: a Marathon /v2/apps?embed=apps.tasks document with one app /bench:
  HAPROXY_GROUP=external, HAPROXY_0_VHOST, HAPROXY_0_BIND_ADDR=127.0.0.1 (its service-port
  frontend stays on loopback), service port F_SVC, 3 running tasks at the backend ports.
"""
import argparse
import json
import os

p = argparse.ArgumentParser()
p.add_argument("work")
p.add_argument("--backends", required=True)
p.add_argument("--workers", type=int, required=True)
p.add_argument("--cert", required=True)
p.add_argument("--haproxy", required=True)
p.add_argument("--nginx", required=True)
p.add_argument("--ferryman", required=True)
p.add_argument("--vhost", default="bench.example.com")
p.add_argument("--idle-timeout", type=int, default=60)
a = p.parse_args()
w = a.work
backends = [int(x) for x in a.backends.split(",")]
h_http, h_https, h_svc = (int(x) for x in a.haproxy.split(","))
n_http, n_https = (int(x) for x in a.nginx.split(","))
_f_http, _f_https, f_svc = (int(x) for x in a.ferryman.split(","))
idle = a.idle_timeout
temp_paths = (f"client_body_temp_path {w}/{{p}}/body; proxy_temp_path {w}/{{p}}/proxy; "
              f"fastcgi_temp_path {w}/{{p}}/fastcgi; uwsgi_temp_path {w}/{{p}}/uwsgi; "
              f"scgi_temp_path {w}/{{p}}/scgi;")

# === nginx backends ===
with open(os.path.join(w, "backends.conf"), "w") as f:
    listens = "\n".join(f"    listen 127.0.0.1:{port} reuseport backlog=8192;" for port in backends)
    f.write(f"""daemon off;
worker_processes 1;
pid {w}/backends.pid;
error_log {w}/backends-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16000; }}
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  keepalive_timeout {idle + 30}s;
  {temp_paths.format(p="backends")}
  server {{
{listens}
    location / {{ return 200 "ok\\n"; }}
  }}
}}
""")

# === HAProxy (Marathon-LB's generated config for one vhost app) ===
backend = f"bench_{f_svc}"  # Marathon-LB: app id with / -> _, plus _servicePort
servers = "\n".join(
    # BACKEND_SERVER_OPTIONS: server {serverName} {host_ipv4}:{port} id {serverId}
    f"  server 127_0_0_1_{port} 127.0.0.1:{port} id {i + 1}" for i, port in enumerate(backends))
with open(os.path.join(w, "haproxy.cfg"), "w") as f:
    f.write(f"""global
  nbthread {a.workers}
  maxconn 9000
  tune.ssl.default-dh-param 2048
  ssl-default-bind-options no-sslv3 no-tlsv10 no-tls-tickets

defaults
  mode http
  retries 3
  backlog 10000
  maxconn 9000
  timeout connect 3s
  timeout client {idle}s
  timeout server {idle}s
  timeout tunnel 3600s
  timeout http-keep-alive {idle}s
  timeout http-request 15s
  timeout queue 30s
  option redispatch
  option http-keep-alive
  option dontlognull

frontend marathon_http_in
  bind 127.0.0.1:{h_http}
  mode http
  acl host_{a.vhost.replace('.', '_')} hdr(host) -i {a.vhost}
  use_backend {backend} if host_{a.vhost.replace('.', '_')}

frontend marathon_https_in
  bind 127.0.0.1:{h_https} ssl crt {a.cert} alpn h2,http/1.1
  mode http
  use_backend {backend} if {{ ssl_fc_sni {a.vhost} }}

frontend {backend}
  bind 127.0.0.1:{h_svc}
  mode http
  use_backend {backend}

backend {backend}
  balance roundrobin
  mode http
  http-reuse always
  option forwardfor
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request add-header X-Forwarded-Proto https if {{ ssl_fc }}
{servers}
""")

# === nginx as the reverse proxy ===
upstream = "\n".join(f"    server 127.0.0.1:{port};" for port in backends)
with open(os.path.join(w, "nginx-proxy.conf"), "w") as f:
    f.write(f"""daemon off;
worker_processes {a.workers};
pid {w}/nginx-proxy.pid;
error_log {w}/nginx-proxy-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 18000; }}
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  keepalive_timeout {idle}s;
  {temp_paths.format(p="nginx-proxy")}
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_tickets off;
  upstream {backend} {{
{upstream}
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout {idle + 10}s;
  }}
  server {{
    listen 127.0.0.1:{n_http} default_server reuseport backlog=10000;
    listen 127.0.0.1:{n_https} ssl http2 default_server reuseport backlog=10000;
    ssl_certificate {a.cert};
    ssl_certificate_key {a.cert};
    return 503;
  }}
  server {{
    listen 127.0.0.1:{n_http};
    listen 127.0.0.1:{n_https} ssl http2;
    server_name {a.vhost};
    ssl_certificate {a.cert};
    ssl_certificate_key {a.cert};
    location / {{
      proxy_pass http://{backend};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_buffering on;
    }}
  }}
}}
""")
for prefix in ("backends", "nginx-proxy"):
    os.makedirs(os.path.join(w, prefix), exist_ok=True)

# === Marathon apps for Ferryman ===
tasks = [{
    "id": f"bench.task-{i}", "appId": "/bench", "host": "127.0.0.1", "slaveId": "agent-0",
    "ports": [port], "ipAddresses": [{"ipAddress": "127.0.0.1", "protocol": "IPv4"}],
    "state": "TASK_RUNNING", "startedAt": "2026-01-12T09:30:03.000Z",
    "version": "2026-01-12T09:30:00.000Z",
} for i, port in enumerate(backends)]
app = {
    "id": "/bench", "instances": len(tasks),
    "labels": {
        "HAPROXY_GROUP": "external",
        "HAPROXY_0_VHOST": a.vhost,
        "HAPROXY_0_BIND_ADDR": "127.0.0.1",
    },
    "portDefinitions": [{"port": f_svc, "protocol": "tcp", "name": "http"}],
    "healthChecks": [], "version": "2026-01-12T09:30:00.000Z", "tasks": tasks,
}
with open(os.path.join(w, "apps.json"), "w") as f:
    json.dump({"apps": [app]}, f)
