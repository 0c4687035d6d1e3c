"""A real ProxyStore RelayClient (proxystore 1.1.0) driven from the command line, used by the
Rust interop tests to talk to our Rust relay client through a relay server.

Prints `READY <uuid>` once registered (flushed), then, by mode:
  recv  print each received message as one JSON line (encode_relay_message), exit after --count
  echo  answer each received peer_connection with description_type "answer" and description
        "echo:" + description, --count times
  send  send one peer_connection to --to with --description, then wait --wait seconds and print
        any reply (e.g. the relay's bounce with `error` set) as JSON lines
With --cafile, a wss:// relay's certificate is checked against that PEM file (as
`ssl.create_default_context(cafile=...)`), to show which certificates Python accepts.
Exits 0 on success; errors go to stderr with a non-zero status.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import uuid

from proxystore.p2p.relay.client import RelayClient
from proxystore.p2p.relay.messages import PeerConnectionRequest
from proxystore.p2p.relay.messages import encode_relay_message


def out(line: str) -> None:
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument('address')
    p.add_argument('--mode', choices=['recv', 'echo', 'send'], required=True)
    p.add_argument('--uuid', default=None)
    p.add_argument('--name', default='python-peer')
    p.add_argument('--to', default=None)
    p.add_argument('--description', default='hello from python')
    p.add_argument('--type', default='offer', choices=['offer', 'answer'])
    p.add_argument('--count', type=int, default=1)
    p.add_argument('--wait', type=float, default=1.0)
    p.add_argument('--header', action='append', default=[])
    p.add_argument(
        '--cafile',
        default=None,
        help='wss:// only: trust the certificates in this PEM file',
    )
    args = p.parse_args()

    headers = {}
    for h in args.header:
        k, _, v = h.partition(':')
        headers[k.strip()] = v.strip()
    client = RelayClient(
        args.address,
        client_name=args.name,
        client_uuid=uuid.UUID(args.uuid) if args.uuid else None,
        extra_headers=headers or None,
        timeout=5,
        ssl_context=(
            ssl.create_default_context(cafile=args.cafile) if args.cafile else None
        ),
    )
    await client.connect(retry=False)
    out(f'READY {client.uuid}')
    try:
        if args.mode == 'recv':
            for _ in range(args.count):
                msg = await client.recv()
                out(encode_relay_message(msg))
        elif args.mode == 'echo':
            done = 0
            while done < args.count:
                msg = await client.recv()
                out(encode_relay_message(msg))
                if not isinstance(msg, PeerConnectionRequest) or msg.error:
                    continue
                await client.send(
                    PeerConnectionRequest(
                        source_uuid=client.uuid,
                        source_name=client.name,
                        peer_uuid=msg.source_uuid,
                        description_type='answer',
                        description='echo:' + msg.description,
                    ),
                )
                done += 1
        else:
            await client.send(
                PeerConnectionRequest(
                    source_uuid=client.uuid,
                    source_name=client.name,
                    peer_uuid=uuid.UUID(args.to),
                    description_type=args.type,
                    description=args.description,
                ),
            )
            try:
                while True:
                    msg = await asyncio.wait_for(client.recv(), args.wait)
                    out(encode_relay_message(msg))
            except asyncio.TimeoutError:
                pass
            out('SENT')
    finally:
        await client.close()
    return 0


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))
