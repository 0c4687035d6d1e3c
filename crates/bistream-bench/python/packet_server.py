"""cs.packetstream echo server for `bistream bench packet` (embedded in the bistream binary).

Listens on HOST:PORT (port 0 = any), prints the bound "HOST:PORT" as its first stdout line,
then serves each connection in its own thread with a stock PacketConnection whose request
handler echoes rq_type 0 (flags and payload back) and fails every other rq_type — the same
contract as `bistream packet serve --demo`. packet_grace is 0 (flush as soon as the send queue
is empty); the stock default of 0.01 s would cap a sequential client near 50 requests/s.
"""
import socket
import sys
import threading

from cs.packetstream import PacketConnection

GRACE = 0.0


def handler(rq_type, flags, payload):
    if rq_type != 0:
        raise ValueError(f"unsupported rq_type {rq_type}")
    return flags, bytes(payload)


def serve(sock, n):
    with sock:
        conn = PacketConnection(
            (sock.fileno(), sock.fileno()), f"bench-server-{n}", request_handler=handler, packet_grace=GRACE
        )
        with conn:
            conn.join_recv()


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(128)
    h, p = ls.getsockname()
    print(f"{h}:{p}", flush=True)
    n = 0
    while True:
        s, _ = ls.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        n += 1
        threading.Thread(target=serve, args=(s, n), daemon=True).start()


if __name__ == "__main__":
    main()
