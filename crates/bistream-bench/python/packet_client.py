"""cs.packetstream load client for `bistream bench packet` (embedded in the bistream binary).

usage: packet_client.py HOST:PORT WARMUP_S DURATION_S RUNS SIZE:IN_FLIGHT [SIZE:IN_FLIGHT ...]

For each workload and run: opens a new connection (stock PacketConnection, packet_grace=0),
keeps IN_FLIGHT echo requests (rq_type 0, SIZE-byte payload) outstanding, warms up, then counts
the requests completed in the measured window. Prints one JSON line per run:
{"size":..., "in_flight":..., "run":..., "count":..., "secs":..., "lat_ns":[...]}
(lat_ns only when IN_FLIGHT is 1). Exits non-zero with a message on stderr on any failure.
"""
import json
import socket
import sys
import time
from collections import deque

from cs.packetstream import PacketConnection

GRACE = 0.0


def one_run(host, port, size, in_flight, warmup, duration):
    payload = b"\x07" * size
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    lat = []
    count = 0
    with sock:
        conn = PacketConnection((sock.fileno(), sock.fileno()), "bench-client", packet_grace=GRACE)
        with conn:
            q = deque()
            start = time.perf_counter()
            t_measure = start + warmup
            t_end = t_measure + duration
            measured_from = None
            while True:
                now = time.perf_counter()
                if now >= t_end:
                    break
                while len(q) < in_flight:
                    q.append((time.perf_counter_ns(), conn.submit(0, 0, payload)))
                t0, r = q.popleft()
                ok, flags, got = r()
                if not ok or len(got) != size:
                    raise RuntimeError(f"bad echo: ok={ok} len={len(got)}")
                done = time.perf_counter()
                if done >= t_measure:
                    if measured_from is None:
                        measured_from = done
                    count += 1
                    if in_flight == 1:
                        lat.append(time.perf_counter_ns() - t0)
            secs = time.perf_counter() - (measured_from or t_measure)
            while q:
                q.popleft()[1]()
    return count, secs, lat


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    warmup, duration, runs = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    for spec in sys.argv[5:]:
        size, in_flight = (int(x) for x in spec.split(":"))
        for run in range(runs):
            count, secs, lat = one_run(host, int(port), size, in_flight, warmup, duration)
            print(
                json.dumps(
                    {
                        "size": size,
                        "in_flight": in_flight,
                        "run": run,
                        "count": count,
                        "secs": secs,
                        "lat_ns": lat,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
