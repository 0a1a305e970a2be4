#!/usr/bin/env python3
"""Opens N idle TCP connections to HOST:PORT, prints "open N" once all are established, then
holds them (sending nothing) until stdin closes or TIMEOUT seconds pass.

    idle_conns.py HOST PORT N [TIMEOUT]
"""
import select
import socket
import sys
import time

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
socks = []
deadline = time.monotonic() + timeout
for _ in range(n):
    s = socket.create_connection((host, port), timeout=5)
    socks.append(s)
print(f"open {len(socks)}", flush=True)
select.select([sys.stdin], [], [], max(0.0, deadline - time.monotonic()))
for s in socks:
    s.close()
