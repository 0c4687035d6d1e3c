"""Interop peer for bistream's RSocket support, using the real Python `rsocket` package.

    rsocket_peer.py client tcp|ws HOST PORT   run the checks against a bistream RSocket server
    rsocket_peer.py server tcp|ws HOST PORT   serve echo/count/upper/log/fail (prints the port)

Client mode prints one line per check (`ok NAME` or `FAIL NAME: why`) and exits 0 when all pass.
"""
import asyncio
import json
import sys

from reactivestreams.subscriber import DefaultSubscriber
from reactivestreams.subscription import DefaultSubscription
from rsocket.extensions.helpers import composite, route
from rsocket.extensions.mimetypes import WellKnownMimeTypes
from rsocket.helpers import create_future, single_transport_provider
from rsocket.payload import Payload
from rsocket.rsocket_client import RSocketClient
from rsocket.rsocket_server import RSocketServer
from rsocket.routing.request_router import RequestRouter
from rsocket.routing.routing_request_handler import RoutingRequestHandler
from rsocket.streams.stream_from_async_generator import StreamFromAsyncGenerator
from rsocket.transports.tcp import TransportTCP

FAILED = []


def check(name, cond, why=""):
    if cond:
        print(f"ok {name}", flush=True)
    else:
        FAILED.append(name)
        print(f"FAIL {name}: {why}", flush=True)


def j(payload):
    return json.loads(payload.data) if payload.data else None


class Collect(DefaultSubscriber):
    def __init__(self, take=None, request_n=4):
        super().__init__()
        self.items, self.done, self.error = [], create_future(), None
        self.take, self.request_n = take, request_n

    def on_subscribe(self, subscription):
        super().on_subscribe(subscription)
        subscription.request(self.request_n)

    def on_next(self, value, is_complete=False):
        self.items.append(json.loads(value.data))
        if self.take is not None and len(self.items) >= self.take:
            self.subscription.cancel()
            if not self.done.done():
                self.done.set_result(None)
            return
        if is_complete:
            self.on_complete()
        elif len(self.items) % self.request_n == 0:
            self.subscription.request(self.request_n)

    def on_complete(self):
        if not self.done.done():
            self.done.set_result(None)

    def on_error(self, exception):
        self.error = exception
        if not self.done.done():
            self.done.set_result(None)


class Items(DefaultSubscription):
    """Publisher of channel items: sends only what the responder requests."""

    def __init__(self, items):
        self.items, self.requested = list(items), []
        self.subscriber = None

    def subscribe(self, subscriber):
        self.subscriber = subscriber
        subscriber.on_subscribe(self)

    def request(self, n):
        self.requested.append(n)
        while n > 0 and self.items:
            item = self.items.pop(0)
            n -= 1
            self.subscriber.on_next(Payload(json.dumps(item).encode()), is_complete=not self.items)


async def client_checks(client):
    r = await client.request_response(Payload(b'{"x": 1, "big": 9007199254740993}', composite(route("echo"))))
    check("request_response echo", j(r) == {"operation": "echo", "x": 1, "big": 9007199254740993}, r.data)

    try:
        await client.request_response(Payload(b"{}", composite(route("fail"))))
        check("handler failure is an error", False, "no error")
    except Exception as e:  # APPLICATION_ERROR -> RuntimeError
        check("handler failure is APPLICATION_ERROR", type(e) is RuntimeError and "fail always fails" in str(e), repr(e))

    try:
        await client.request_response(Payload(b"{}", composite(route("nope"))))
        check("unknown route is an error", False, "no error")
    except Exception as e:
        check("unknown route is an error", "nope" in str(e) or "unknown" in str(e), repr(e))

    s = Collect(request_n=3)
    client.request_stream(Payload(b'{"n": 10}', composite(route("count")))).subscribe(s)
    await asyncio.wait_for(s.done, 10)
    check("request_stream count with REQUEST_N 3", s.items == list(range(10)) and s.error is None, (s.items, s.error))

    s = Collect()
    client.request_stream(Payload(b'{"n": 0}', composite(route("count")))).subscribe(s)
    await asyncio.wait_for(s.done, 10)
    check("empty stream completes", s.items == [] and s.error is None, (s.items, s.error))

    s = Collect(take=3, request_n=2)
    client.request_stream(Payload(b'{"n": 1000000, "delay_ms": 1}', composite(route("count")))).subscribe(s)
    await asyncio.wait_for(s.done, 10)
    await asyncio.sleep(0.3)
    check("cancel a stream", s.items == [0, 1, 2], s.items)

    pub = Items(["b", "c", "d"])
    s = Collect(request_n=8)
    client.request_channel(Payload(b'"a"', composite(route("upper"))), pub).subscribe(s)
    await asyncio.wait_for(s.done, 10)
    check("request_channel upper", s.items == ["A", "B", "C", "D"] and s.error is None, (s.items, s.error))
    check("responder granted REQUEST_N for the channel", len(pub.requested) >= 1, pub.requested)

    await client.fire_and_forget(Payload(b'{"from": "python"}', composite(route("log"))))
    check("fire_and_forget sent", True)

    await client.metadata_push(composite(route("anything")))
    r = await client.request_response(Payload(b'{"after": "push"}', composite(route("echo"))))
    check("METADATA_PUSH accepted silently", j(r)["after"] == "push", r.data)

    big = "x" * (300 * 1024)
    r = await client.request_response(Payload(json.dumps({"big": big}).encode(), composite(route("echo"))))
    check("300 KiB request and reply", j(r)["big"] == big, len(r.data))


async def run_client(kind, host, port):
    if kind == "tcp":
        reader, writer = await asyncio.open_connection(host, port)
        transport = TransportTCP(reader, writer)
        async with RSocketClient(single_transport_provider(transport),
                                 metadata_encoding=WellKnownMimeTypes.MESSAGE_RSOCKET_COMPOSITE_METADATA,
                                 data_encoding=WellKnownMimeTypes.APPLICATION_JSON,
                                 fragment_size_bytes=64 * 1024) as client:
            await client_checks(client)
    else:
        import websockets
        from rsocket.transports.websockets_transport import WebsocketsTransport
        async with websockets.connect(f"ws://{host}:{port}/", compression=None, max_size=None) as ws:
            transport = WebsocketsTransport()
            # 32 KiB: over WebSocket rsocket-py fragments exceed fragment_size_bytes by 3 bytes.
            pump = asyncio.create_task(transport.handler(ws))
            async with RSocketClient(single_transport_provider(transport),
                                     metadata_encoding=WellKnownMimeTypes.MESSAGE_RSOCKET_COMPOSITE_METADATA,
                                     data_encoding=WellKnownMimeTypes.APPLICATION_JSON,
                                     fragment_size_bytes=32 * 1024) as client:
                await client_checks(client)
            pump.cancel()
    return 1 if FAILED else 0


def server_router():
    router = RequestRouter()

    @router.response("echo")
    async def echo(payload: Payload, composite_metadata):
        return create_future(Payload(payload.data))

    @router.response("fail")
    async def fail(payload: Payload, composite_metadata):
        raise RuntimeError("python says no")

    @router.stream("count")
    async def count(payload: Payload, composite_metadata):
        n = json.loads(payload.data)["n"]

        async def gen():
            for i in range(n):
                yield Payload(json.dumps(i).encode()), i == n - 1
        if n == 0:
            from rsocket.streams.empty_stream import EmptyStream
            return EmptyStream()
        return StreamFromAsyncGenerator(gen)

    @router.fire_and_forget("log")
    async def log(payload: Payload, composite_metadata):
        print("log " + payload.data.decode(), flush=True)

    @router.channel("upper")
    async def upper(payload: Payload, composite_metadata):
        from rsocket.streams.stream_from_async_generator import StreamFromAsyncGenerator as S
        queue = asyncio.Queue()
        queue.put_nowait(json.loads(payload.data))

        class Sub(DefaultSubscriber):
            def on_subscribe(self, subscription):
                super().on_subscribe(subscription)
                subscription.request(16)

            def on_next(self, value, is_complete=False):
                queue.put_nowait(json.loads(value.data))
                if is_complete:
                    queue.put_nowait(None)

            def on_complete(self):
                queue.put_nowait(None)

        async def gen():
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield Payload(json.dumps(item.upper()).encode()), False

        return S(gen), Sub()

    return router


async def run_server(kind, host, port):
    router = server_router()

    if kind == "ws":
        # rsocket's WebsocketsTransport on a `websockets` server: one frame per binary message.
        import websockets
        from rsocket.transports.websockets_transport import WebsocketsTransport

        async def ws_session(websocket):
            transport = WebsocketsTransport()
            # 32 KiB: over WebSocket rsocket-py fragments exceed fragment_size_bytes by 3 bytes.
            server = RSocketServer(transport, handler_factory=lambda: RoutingRequestHandler(router),
                                   fragment_size_bytes=32 * 1024)
            try:
                await transport.handler(websocket)
            finally:
                await server.close()

        async with websockets.serve(ws_session, host, port, compression=None, max_size=None) as server:
            print("listening", list(server.sockets)[0].getsockname()[1], flush=True)
            await asyncio.Future()
        return

    def session(*conn):
        RSocketServer(TransportTCP(*conn), handler_factory=lambda: RoutingRequestHandler(router),
                      fragment_size_bytes=64 * 1024)

    server = await asyncio.start_server(session, host, port)
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main():
    mode, kind, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode == "client":
        sys.exit(asyncio.run(run_client(kind, host, port)))
    asyncio.run(run_server(kind, host, port))


if __name__ == "__main__":
    main()
