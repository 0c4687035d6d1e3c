#!/usr/bin/env python3
"""A stock cs.packetstream 20240630 server for the interop tests.

    packet_server.py tcp [GRACE]   listen on 127.0.0.1:0, print "PORT <n>", serve each
                                   connection in a thread, print "CONN DONE <n>" when one ends
    packet_server.py stdio [GRACE] serve one connection over stdin/stdout

The service: 0 echo (flags, payload), 1 reverse (flags = len), 2 raises, 3 echo after
200 ms, 4 returns a str, 5 returns an int, 6 calls back: sends the request (rq_type = the
flags, payload, flags 9) to the peer over the same connection and returns (ok, payload) of
that call as (flags, payload), 10 waits for the gate (max 20 s) then returns
b"gated", 11 opens the gate, anything else raises. A watchdog ends the process after 120 s so
a Python hang fails the test instead of hanging CI.
"""
import faulthandler
import os
import socket
import sys
import threading
import time

faulthandler.dump_traceback_later(120, exit=True)

from cs.packetstream import PacketConnection  # noqa: E402

GATE = threading.Event()


def make_handler(get_conn):
    def h(rq_type, flags, payload):
        if rq_type == 6:
            ok, _, got = get_conn()(flags, bytes(payload), 9)
            return (1 if ok else 0), bytes(got)
        return handler(rq_type, flags, payload)

    return h


def handler(rq_type, flags, payload):
    payload = bytes(payload)
    if rq_type == 0:
        return flags, payload
    if rq_type == 1:
        return len(payload), payload[::-1]
    if rq_type == 2:
        raise ValueError("rq_type 2 always fails")
    if rq_type == 3:
        time.sleep(0.2)
        return flags, payload
    if rq_type == 4:
        return "text \u00e9"
    if rq_type == 5:
        return 42
    if rq_type == 10:
        if not GATE.wait(20):
            raise RuntimeError("gate never opened")
        GATE.clear()
        return b"gated"
    if rq_type == 11:
        GATE.set()
        return None
    raise KeyError(rq_type)


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main():
    mode = sys.argv[1]
    grace = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    if mode == "stdio":
        # cs.packetstream prints progress lines to stdout at shutdown: keep the packet stream
        # on a private dup of fd 1 and point fd 1 at stderr.
        send_fd = os.dup(1)
        os.dup2(2, 1)
        conn = PacketConnection(
            (0, send_fd), "stdio", request_handler=make_handler(lambda: conn), packet_grace=grace
        )
        with conn:
            conn.join_recv()
        os.close(send_fd)
        sys.stderr.write("STDIO DONE\n")
        return
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    out("PORT %d" % srv.getsockname()[1])
    n = 0
    while True:
        sock, _ = srv.accept()
        n += 1

        def serve(sock=sock, n=n):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = PacketConnection(
                (sock.fileno(), sock.fileno()),
                "srv%d" % n,
                request_handler=make_handler(lambda: conn),
                packet_grace=grace,
            )
            with conn:
                conn.join_recv()
            sock.close()
            out("CONN DONE %d" % n)

        threading.Thread(target=serve, daemon=True).start()


if __name__ == "__main__":
    main()
