"""The REAL proxystore 1.1.0 RelayServer with a fake token authenticator, so the Rust client's
handling of close codes 4001/4002/4004 is tested against the real server code (the real
Globus authenticator needs the Globus service).

The authenticator uses proxystore's own get_token_from_headers (so a missing or malformed
`Authorization: Bearer <token>` gives the real 4001 texts); the user is the token string,
except the token `revoked`, which raises ForbiddenError('Token is expired or has been
revoked.') as the Globus authenticator does for an inactive token (close 4002).

Serves on 127.0.0.1, port 0 (picked by the OS), prints `LISTENING <port>` when ready, and
stops on SIGTERM/SIGINT or when stdin closes.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import websockets.asyncio.server
from proxystore.p2p.relay.authenticate import get_token_from_headers
from proxystore.p2p.relay.exceptions import ForbiddenError
from proxystore.p2p.relay.server import RelayServer


class FakeTokenAuthenticator:
    def authenticate_user(self, headers):
        token = get_token_from_headers(headers)
        if token == 'revoked':
            raise ForbiddenError('Token is expired or has been revoked.')
        return token


async def main() -> None:
    server = RelayServer(FakeTokenAuthenticator())
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

    async def watch_stdin() -> None:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin,
        )
        await reader.read()
        if not stop.done():
            stop.set_result(None)

    stdin_task = asyncio.create_task(watch_stdin())
    async with websockets.asyncio.server.serve(
        server.handler, '127.0.0.1', 0, logger=None,
    ) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        sys.stdout.write(f'LISTENING {port}\n')
        sys.stdout.flush()
        await stop
    stdin_task.cancel()


if __name__ == '__main__':
    asyncio.run(main())
