#!/usr/bin/env python3
"""A slipstream-style rpc peer written from docs/protocol/rpc.md alone, with `websockets`.

It speaks the base protocol (no hello, cancel, credit or keepalive), so it is also what a
seed-compatible peer looks like to bistream. Both ends are symmetric: a `Peer` can call and
serve on one WebSocket.

    python slipstream_peer.py serve [HOST] [PORT]   # demo service; prints "rpc listening on ws://HOST:PORT"
    python slipstream_peer.py check URL             # runs the interop checks against a server
    python slipstream_peer.py bench URL SECONDS CONCURRENCY  # echo calls/s (bench suite)
    python slipstream_peer.py bench-stream URL SECONDS       # items/s of one count stream (bench suite)
"""

import asyncio
import itertools
import json
import sys
import time
import uuid

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

REQUEST_TYPES = ("request", "stream_request", "stream_stream_request", "fire_and_forget")
REPLY_TYPES = ("response", "error", "stream_data", "stream_end")
_END = object()


class RemoteError(Exception):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionEnded(Exception):
    pass


class HandlerError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _valid_request_id(r):
    return (
        isinstance(r, list)
        and len(r) == 2
        and isinstance(r[0], str)
        and isinstance(r[1], int)
        and not isinstance(r[1], bool)
    )


class BiStream:
    """The caller's handle of a stream/stream call: send(), end(), and async iteration."""

    def __init__(self, peer, rid):
        self._peer = peer
        self.rid = rid
        self.queue = asyncio.Queue()
        self._ended = False

    async def send(self, item):
        await self._peer._send("stream_data", list(self.rid), item)

    async def end(self):
        if not self._ended:
            self._ended = True
            await self._peer._send("stream_end", list(self.rid), None)

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self.queue.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        return item


class Peer:
    def __init__(self, ws):
        self.ws = ws
        self.peer_id = str(uuid.uuid4())
        self.counter = itertools.count()
        self.handlers = {}  # op -> (model, fn)
        self.calls = {}  # counter -> Future or Queue
        self.serving = {}  # (peer, n) -> (task, inbound queue or None)
        self.invalid_in_row = 0
        self.closed = None

    # ---- serving -----------------------------------------------------------------------
    def handle(self, model, op):
        def deco(fn):
            self.handlers[op] = (model, fn)
            return fn

        return deco

    async def _send(self, type_, rid, data):
        frame = {"type": type_, "peerID": self.peer_id, "requestId": rid, "data": data}
        await self.ws.send(json.dumps(frame, ensure_ascii=False))

    async def _error(self, rid, code, message):
        await self._send("error", rid, {"code": code, "message": message})

    async def listen(self):
        try:
            async for message in self.ws:
                await self._on_message(message)
        except ConnectionClosed as e:
            self.closed = e
        finally:
            err = ConnectionEnded(f"connection ended: {self.closed}")
            for c in self.calls.values():
                if isinstance(c, asyncio.Future):
                    if not c.done():
                        c.set_exception(err)
                else:
                    c.put_nowait(err)
            self.calls.clear()
            for task, _ in list(self.serving.values()):
                task.cancel()

    async def _invalid(self, rid, reason):
        self.invalid_in_row += 1
        if _valid_request_id(rid) and rid[0] != self.peer_id:
            await self._error(rid, "invalid_request", f"invalid frame: {reason}")
        if self.invalid_in_row >= 100:
            await self.ws.close(1008, "too many invalid frames")

    async def _on_message(self, message):
        if not isinstance(message, str):
            return await self._invalid(None, "binary message")
        try:
            f = json.loads(message)
        except ValueError as e:
            return await self._invalid(None, str(e))
        if not isinstance(f, dict):
            return await self._invalid(None, "not an object")
        t, rid, data = f.get("type"), f.get("requestId"), f.get("data")
        if t in REQUEST_TYPES:
            if not f.get("peerID"):
                return await self._invalid(rid, "peerID required for request messages")
            if not isinstance(data, dict) or not isinstance(data.get("operation"), str):
                return await self._invalid(rid, "data must be an object with a string operation")
            if t != "fire_and_forget" and not _valid_request_id(rid):
                return await self._invalid(rid, "bad requestId")
            self.invalid_in_row = 0
            return self._serve(t, rid, data)
        if t in REPLY_TYPES and _valid_request_id(rid):
            self.invalid_in_row = 0
            if rid[0] == self.peer_id:
                return self._on_reply(t, rid[1], data)
            entry = self.serving.get(tuple(rid))
            if entry and entry[1] is not None and t in ("stream_data", "stream_end"):
                entry[1].put_nowait(data if t == "stream_data" else _END)
            return
        return await self._invalid(rid, f"unknown or malformed frame type {t!r}")

    def _on_reply(self, t, n, data):
        c = self.calls.get(n)
        if c is None:
            return
        if isinstance(c, asyncio.Future):
            self.calls.pop(n)
            if t == "response":
                c.set_result(data)
            elif t == "error":
                c.set_exception(RemoteError(data.get("code"), data.get("message", "")))
            else:
                c.set_exception(RemoteError("protocol", f"unexpected {t}"))
            return
        if t == "stream_data":
            c.put_nowait(data)
        else:
            self.calls.pop(n)
            if t == "error":
                c.put_nowait(RemoteError(data.get("code"), data.get("message", "")))
            c.put_nowait(_END)

    def _serve(self, t, rid, data):
        op = data["operation"]
        model, fn = self.handlers.get(op, (None, None))
        if fn is None:
            if t != "fire_and_forget":
                asyncio.ensure_future(self._error(rid, "unknown_operation", f"unknown operation: {op}"))
            return
        if model != t:
            if t != "fire_and_forget":
                asyncio.ensure_future(
                    self._error(rid, "invalid_request", f"operation {op} is a {model}, called as {t}")
                )
            return
        inbound = asyncio.Queue() if t == "stream_stream_request" else None
        task = asyncio.ensure_future(self._run(t, rid, data, fn, inbound))
        if rid is not None and t != "fire_and_forget":
            self.serving[tuple(rid)] = (task, inbound)

    async def _run(self, t, rid, data, fn, inbound):
        try:
            if t == "request":
                await self._send("response", rid, await fn(data))
            elif t == "stream_request":
                async for item in fn(data):
                    await self._send("stream_data", rid, item)
                await self._send("stream_end", rid, None)
            elif t == "stream_stream_request":

                async def items():
                    while True:
                        x = await inbound.get()
                        if x is _END:
                            return
                        yield x

                async for item in fn(data, items()):
                    await self._send("stream_data", rid, item)
                await self._send("stream_end", rid, None)
            else:
                await fn(data)
        except HandlerError as e:
            if t != "fire_and_forget":
                await self._error(rid, e.code, e.message)
        except (ConnectionClosed, asyncio.CancelledError):
            pass
        except Exception as e:  # a failing handler answers handler_failed
            if t != "fire_and_forget":
                await self._error(rid, "handler_failed", str(e))
        finally:
            if rid is not None:
                self.serving.pop(tuple(rid), None)

    # ---- calling -----------------------------------------------------------------------
    def _rid(self):
        return [self.peer_id, next(self.counter)]

    async def request_response(self, op, **fields):
        rid = self._rid()
        fut = asyncio.get_running_loop().create_future()
        self.calls[rid[1]] = fut
        await self._send("request", rid, {"operation": op, **fields})
        return await fut

    async def request_stream(self, op, **fields):
        rid = self._rid()
        q = asyncio.Queue()
        self.calls[rid[1]] = q
        await self._send("stream_request", rid, {"operation": op, **fields})
        while True:
            x = await q.get()
            if x is _END:
                return
            if isinstance(x, Exception):
                raise x
            yield x

    async def stream_stream(self, op, **fields):
        rid = self._rid()
        h = BiStream(self, rid)
        self.calls[rid[1]] = h.queue
        await self._send("stream_stream_request", rid, {"operation": op, **fields})
        return h

    async def fire_and_forget(self, op, **fields):
        await self._send("fire_and_forget", None, {"operation": op, **fields})


# ---- the demo service (same operations as `bistream rpc serve`) -----------------------------
def install_demo(peer):
    @peer.handle("request", "echo")
    async def echo(data):
        return data

    @peer.handle("stream_request", "count")
    async def count(data):
        n, d = data.get("n"), data.get("delay_ms", 0)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise HandlerError("invalid_request", "n must be a non-negative integer")
        for i in range(n):
            if d and i:
                await asyncio.sleep(d / 1000)
            yield i

    @peer.handle("stream_stream_request", "upper")
    async def upper(data, items):
        async for x in items:
            if not isinstance(x, str):
                raise HandlerError("invalid_request", "upper takes string items")
            yield x.upper()

    @peer.handle("fire_and_forget", "log")
    async def log(data):
        print(json.dumps(data, separators=(",", ":"), ensure_ascii=False), flush=True)

    @peer.handle("request", "sleep")
    async def sleep(data):
        await asyncio.sleep(data["ms"] / 1000)
        return {"slept_ms": data["ms"]}

    @peer.handle("request", "fail")
    async def fail(data):
        raise RuntimeError("fail always fails")


async def run_server(host, port):
    async def on_conn(ws):
        peer = Peer(ws)
        install_demo(peer)
        await peer.listen()

    async with serve(on_conn, host, port, max_size=4 * 1024 * 1024, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"rpc listening on ws://{host}:{port}", flush=True)
        await asyncio.Future()


# ---- interop checks against a server (prints OK/FAIL lines, then ALL DONE) -----------------
async def run_checks(url):
    failures = 0

    def check(name, cond, detail=""):
        nonlocal failures
        if cond:
            print(f"OK {name}", flush=True)
        else:
            failures += 1
            print(f"FAIL {name} {detail}", flush=True)

    async with connect(url, max_size=8 * 1024 * 1024, compression=None) as ws:
        peer = Peer(ws)
        listener = asyncio.ensure_future(peer.listen())
        big, neg = 2**53 + 1, -(2**63)
        r = await peer.request_response("echo", v=[big, neg], s="é\u00e9")
        check("echo exact numbers", r == {"operation": "echo", "v": [big, neg], "s": "éé"}, r)
        items = [x async for x in peer.request_stream("count", n=5)]
        check("count stream", items == [0, 1, 2, 3, 4], items)
        h = await peer.stream_stream("upper")
        await h.send("abc")
        first = await h.__anext__()
        await h.send("déf")
        await h.end()
        rest = [x async for x in h]
        check("upper bi-stream", [first] + rest == ["ABC", "DÉF"], (first, rest))
        await peer.fire_and_forget("log", line="from python")
        check("log fire-and-forget", True)
        for op, code in (("fail", "handler_failed"), ("nope", "unknown_operation"), ("count", "invalid_request")):
            try:
                await peer.request_response(op)
                check(f"error {code}", False, "no error")
            except RemoteError as e:
                check(f"error {code}", e.code == code and (op != "nope" or "nope" in e.message), e)
        try:
            _ = [x async for x in peer.request_stream("count", n=-1)]
            check("count n=-1 invalid", False)
        except RemoteError as e:
            check("count n=-1 invalid", e.code == "invalid_request", e)
        # Concurrency: a slow call does not delay fast ones; replies may come out of order.
        t0 = time.monotonic()
        slow = asyncio.ensure_future(peer.request_response("sleep", ms=1000))
        fast = await asyncio.gather(*(peer.request_response("echo", i=i) for i in range(200)))
        check("200 concurrent echoes", [x["i"] for x in fast] == list(range(200)))
        check("fast calls not delayed by a slow one", not slow.done() and time.monotonic() - t0 < 1.0)
        check("slow call answered", (await slow) == {"slept_ms": 1000})
        # Interleaved streams keep their own order.
        async def collect(n):
            return [x async for x in peer.request_stream("count", n=n)]

        outs = await asyncio.gather(*(collect(100 + i) for i in range(10)))
        check("10 interleaved streams in order", all(o == list(range(100 + i)) for i, o in enumerate(outs)))
        # An invalid frame with a readable requestId gets invalid_request; the connection lives on.
        fut = asyncio.get_running_loop().create_future()
        peer.calls[999999] = fut
        await ws.send(json.dumps({"type": "request", "requestId": [peer.peer_id, 999999], "data": {"operation": "echo"}}))
        try:
            await fut
            check("invalid frame answered", False)
        except RemoteError as e:
            check("invalid frame answered", e.code == "invalid_request", e)
        await ws.send("not json at all")
        r = await peer.request_response("echo", after="garbage")
        check("connection survives garbage", r.get("after") == "garbage", r)
        listener.cancel()
    print("ALL DONE" if failures == 0 else f"FAILED {failures}", flush=True)
    return failures


async def run_bench(url, seconds, concurrency):
    async with connect(url, max_size=8 * 1024 * 1024, compression=None) as ws:
        peer = Peer(ws)
        listener = asyncio.ensure_future(peer.listen())
        done = 0
        deadline = time.monotonic() + seconds

        async def worker():
            nonlocal done
            while time.monotonic() < deadline:
                await peer.request_response("echo", k=1)
                done += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        print(f"calls_per_sec {done / (time.monotonic() - t0):.1f}", flush=True)
        listener.cancel()


async def run_bench_stream(url, seconds):
    """One connection reading one long `count` stream for SECONDS: prints items/s."""
    async with connect(url, max_size=8 * 1024 * 1024, compression=None) as ws:
        peer = Peer(ws)
        listener = asyncio.ensure_future(peer.listen())
        done = 0
        t0 = time.monotonic()
        deadline = t0 + seconds
        items = peer.request_stream("count", n=10**12)
        async for x in items:
            if x != done:
                raise SystemExit(f"out of order: {x} after {done}")
            done += 1
            if done % 1024 == 0 and time.monotonic() >= deadline:
                break
        print(f"items_per_sec {done / (time.monotonic() - t0):.1f}", flush=True)
        listener.cancel()


def main():
    args = sys.argv[1:]
    if args[:1] == ["serve"]:
        host = args[1] if len(args) > 1 else "127.0.0.1"
        port = int(args[2]) if len(args) > 2 else 0
        asyncio.run(run_server(host, port))
    elif args[:1] == ["check"] and len(args) == 2:
        sys.exit(1 if asyncio.run(run_checks(args[1])) else 0)
    elif args[:1] == ["bench"] and len(args) == 4:
        asyncio.run(run_bench(args[1], float(args[2]), int(args[3])))
    elif args[:1] == ["bench-stream"] and len(args) == 3:
        asyncio.run(run_bench_stream(args[1], float(args[2])))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
