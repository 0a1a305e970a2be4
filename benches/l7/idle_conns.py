#!/usr/bin/env python3
"""Opens N HTTP/1.1 keep-alive connections to HOST:PORT, sends one GET with `Host: VHOST` on each
and reads its whole answer (Content-Length), prints "open N" once every connection has had its
200, then holds them idle until stdin closes or TIMEOUT seconds pass.

    idle_conns.py HOST PORT VHOST N [TIMEOUT]

At most 256 connects/requests are in flight at once (so the proxy's accept queue never
overflows). Exits 1 with a reason, printed, when any connection fails or answers non-200 (the
caller then reports the proxy, not a half-measured number). Uses nothing outside the standard
library.
"""
import asyncio
import sys

host, port, vhost, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 120.0
REQUEST = f"GET / HTTP/1.1\r\nHost: {vhost}\r\nUser-Agent: idle_conns\r\n\r\n".encode()


async def one(sem, conns):
    async with sem:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        conns.append(writer)
        writer.write(REQUEST)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"status {status.decode(errors='replace')}")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"connection" and b"close" in value.lower():
                raise RuntimeError("the proxy answered Connection: close")
        await asyncio.wait_for(reader.readexactly(length), 10)
        return reader


async def main():
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(256)
    conns = []
    results = await asyncio.gather(*(one(sem, conns) for _ in range(n)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        print(f"failed {len(errors)} of {n}: {errors[0]!r}", flush=True)
        for w in conns:
            w.close()
        sys.exit(1)
    readers = results
    print(f"open {n}", flush=True)
    # Held until stdin closes (the caller's fifo) or the timeout; a connection the proxy closes
    # meanwhile is counted and reported.
    stdin_closed = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: stdin_closed.done() or stdin_closed.set_result(None))
    try:
        await asyncio.wait_for(stdin_closed, timeout)
    except asyncio.TimeoutError:
        pass
    closed = sum(1 for r in readers if r.at_eof())
    print(f"closed_by_peer {closed}", flush=True)
    for w in conns:
        w.close()


asyncio.run(main())
