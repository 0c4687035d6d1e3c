"""Checks an installed `bistream` (from the pip wheel) against the REAL proxystore 1.1.0.

Usage: wheel_relay_check.py PATH_TO_INSTALLED_BISTREAM

Starts `bistream relay serve --port 0` from the installed binary, reads its address line,
registers two real `RelayClient`s, forwards an offer each way (checking the relay-filled
source fields), then stops the server with SIGTERM and expects exit 0. Prints
"PASS wheel relay" on success; any failure raises (non-zero exit). Run by scripts/test.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from proxystore.p2p.relay.client import RelayClient
from proxystore.p2p.relay.messages import PeerConnectionRequest

T = 20


async def forward(src: RelayClient, dst: RelayClient, text: str) -> None:
    await src.send(
        PeerConnectionRequest(
            source_uuid=src.uuid,
            source_name=src.name,
            peer_uuid=dst.uuid,
            description_type='offer',
            description=text,
        )
    )
    got = await asyncio.wait_for(dst.recv(), T)
    assert isinstance(got, PeerConnectionRequest), got
    assert got.source_uuid == src.uuid and got.source_name == src.name, got
    assert got.description == text and got.error is None, got


async def clients(address: str) -> None:
    async with RelayClient(address, client_name='a', reconnect_task=False) as a, RelayClient(
        address, client_name='b', reconnect_task=False
    ) as b:
        await forward(a, b, 'offer from a ñ😀')
        await forward(b, a, 'answer from b')


def main() -> None:
    # A server that never prints its address must not hang scripts/test: SIGALRM ends us.
    signal.alarm(180)
    exe = sys.argv[1]
    version = subprocess.run([exe, '--version'], capture_output=True, text=True, timeout=T)
    assert version.returncode == 0 and version.stdout.startswith('bistream '), version
    server = subprocess.Popen(
        [exe, 'relay', 'serve', '--host', '127.0.0.1', '--port', '0', '--log-level', 'warn'],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline().strip()
        assert line.startswith('relay listening on ws://127.0.0.1:'), line
        address = line.rsplit(' ', 1)[1]
        asyncio.run(asyncio.wait_for(clients(address), 3 * T))
        server.send_signal(signal.SIGTERM)
        code = server.wait(T)
        assert code == 0, f'exit code {code}'
    finally:
        if server.poll() is None:
            server.kill()
    print(f'PASS wheel relay ({version.stdout.strip()} at {exe})', flush=True)


if __name__ == '__main__':
    main()
