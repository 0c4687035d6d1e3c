#!/usr/bin/env python3
"""A stock cs.packetstream 20240630 client for the interop tests, against a server offering
the demo service (0 echo, 1 reverse, 2 fails, 3 slow echo, others fail).

    packet_client.py HOST:PORT | unix:PATH

Prints "OK <check>" or "FAIL <check>: <detail>" per check, then "ALL DONE" once the connection
has shut down cleanly. A watchdog ends the process after 60 s (a Python hang fails the test).
"""
import faulthandler
import socket
import sys
import threading
import time

faulthandler.dump_traceback_later(60, exit=True)

from cs.packetstream import PacketConnection  # noqa: E402


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def check(name, got, want):
    if got == want:
        out("OK " + name)
    else:
        out("FAIL %s: got %r want %r" % (name, got if len(repr(got)) < 200 else repr(got)[:200], want if len(repr(want)) < 200 else repr(want)[:200]))


def main():
    addr = sys.argv[1]
    if addr.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(addr[5:])
    else:
        host, port = addr.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = PacketConnection((sock.fileno(), sock.fileno()), "client", packet_grace=0)
    big = bytes(i % 251 for i in range(1 << 20))
    with conn:
        check("echo", conn(0, b"hi", 5), (True, 5, b"hi"))
        check("reverse", conn(1, b"abc"), (True, 3, b"cba"))
        check("fail", conn(2, b"x"), (False, 0, b"exception during handler"))
        check("unknown_rq_type", conn(9), (False, 0, b"exception during handler"))
        check("empty", conn(0), (True, 0, b""))
        check("large_flags", conn(0, b"", 1 << 40), (True, 1 << 40, b""))
        check("mib_echo", conn(0, big), (True, 0, big))
        check("mib_reverse", conn(1, big), (True, 1 << 20, big[::-1]))
        # pipelined: many submitted before any is collected
        results = [conn.submit(0, i, b"p%d" % i) for i in range(200)]
        check("pipelined", [R() for R in results], [(True, i, b"p%d" % i) for i in range(200)])
        # several threads at once
        errors = []

        def worker(k):
            for i in range(50):
                got = conn(1, b"t%d-%d" % (k, i))
                want = (True, len(b"t%d-%d" % (k, i)), (b"t%d-%d" % (k, i))[::-1])
                if got != want:
                    errors.append((got, want))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check("threads", errors, [])
        # out of order: the slow echo (200 ms) submitted first, the fast echo second
        t0 = time.monotonic()
        slow = conn.submit(3, 7, b"slow")
        fast = conn.submit(0, 8, b"fast")
        check("fast_result", fast(), (True, 8, b"fast"))
        elapsed = time.monotonic() - t0
        if elapsed < 0.15:
            check("out_of_order", slow.ready, False)
        else:
            out("SKIP out_of_order: the machine took %.3fs for the fast request" % elapsed)
        check("slow_result", slow(), (True, 7, b"slow"))
        # 1 MiB payloads, several in flight
        rs = [conn.submit(0, k, big) for k in range(4)]
        check("mib_in_flight", [R() for R in rs], [(True, k, big) for k in range(4)])
    sock.close()
    out("ALL DONE")


if __name__ == "__main__":
    main()
