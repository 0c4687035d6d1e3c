"""Drives the REAL proxystore 1.1.0 RelayClient / PeerManager against a relay server.

Usage: relay_server_interop.py SCENARIO ADDRESS [ARGS...]

Each scenario prints result lines ("OK <what>") and finally "PASS <scenario>"; any mismatch
raises (non-zero exit, traceback on stderr). Used by crates/bistream/tests/relay_server_*.rs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid

import websockets
import websockets.asyncio.client
from proxystore.p2p.relay.client import RelayClient
from proxystore.p2p.relay.exceptions import RelayRegistrationError
from proxystore.p2p.relay.messages import PeerConnectionRequest

T = 10


def say(*parts: object) -> None:
    print(*parts, flush=True)


def offer(src: RelayClient, peer: uuid.UUID, description: str = 'd') -> PeerConnectionRequest:
    return PeerConnectionRequest(
        source_uuid=src.uuid,
        source_name=src.name,
        peer_uuid=peer,
        description_type='offer',
        description=description,
    )


async def recv(client: RelayClient):
    return await asyncio.wait_for(client.recv(), T)


async def basic(address: str) -> None:
    async with RelayClient(address, client_name='a', reconnect_task=False) as a, RelayClient(
        address, client_name='b', reconnect_task=False
    ) as b:
        say('OK registered', a.uuid, b.uuid)
        # Spoofed source fields are replaced by the relay.
        spoof = PeerConnectionRequest(
            source_uuid=uuid.uuid4(), source_name='mallory', peer_uuid=b.uuid,
            description_type='offer', description='{"sdp": "v=0", "type": "offer"}',
        )
        await a.send(spoof)
        got = await recv(b)
        assert isinstance(got, PeerConnectionRequest), got
        assert got.source_uuid == a.uuid and got.source_name == 'a', got
        assert got.peer_uuid == b.uuid and got.error is None, got
        assert got.description == '{"sdp": "v=0", "type": "offer"}', got
        say('OK forwarded')
        # Non-ASCII round trip.
        await b.send(offer(b, a.uuid, 'ñé😀' * 10))
        got = await recv(a)
        assert got.description == 'ñé😀' * 10 and got.source_uuid == b.uuid, got
        say('OK unicode')
        nobody = uuid.uuid4()
        await a.send(offer(a, nobody))
        got = await recv(a)
        assert got.error == (
            f'Cannot forward peer connection message to peer {nobody} because this peer '
            'is not registered this relay server.'
        ), got.error
        say('OK unknown peer bounced')
        # Messages to self are delivered.
        await a.send(offer(a, a.uuid, 'self'))
        assert (await recv(a)).description == 'self'
        say('OK self')
    say('PASS basic')


async def takeover(address: str) -> None:
    u = uuid.uuid4()
    old = RelayClient(address, client_uuid=u, client_name='old', reconnect_task=False)
    await old.connect()
    new = RelayClient(address, client_uuid=u, client_name='new', reconnect_task=False)
    await new.connect()
    old_ws = old._websocket  # the public property raises once the socket is closed
    await asyncio.wait_for(old_ws.wait_closed(), T)
    assert old_ws.close_code == 4004, old_ws.close_code
    say('OK old socket closed 4004', old_ws.close_reason)
    try:
        await old.connect()
    except RelayRegistrationError as e:
        assert 'same ID' in str(e), e
        say('OK old client refuses to reconnect')
    else:
        raise AssertionError('connect after 4004 should raise')
    await new.close()
    await old.close()
    say('PASS takeover')


async def auth(address: str, good: str, other_user: str) -> None:
    # No header: 4001, not retried.
    c = RelayClient(address, reconnect_task=False)
    try:
        await asyncio.wait_for(c.connect(), T)
    except websockets.exceptions.ConnectionClosedError as e:
        assert e.rcvd is not None and e.rcvd.code == 4001, e
        say('OK missing header 4001', e.rcvd.reason)
    else:
        raise AssertionError('expected 4001')
    # Bad token: 4002, not retried.
    c = RelayClient(address, reconnect_task=False, extra_headers={'Authorization': 'Bearer wrong'})
    try:
        await asyncio.wait_for(c.connect(), T)
    except websockets.exceptions.ConnectionClosedError as e:
        assert e.rcvd is not None and e.rcvd.code == 4002, e
        say('OK bad token 4002', e.rcvd.reason)
    else:
        raise AssertionError('expected 4002')
    h = {'Authorization': f'Bearer {good}'}
    async with RelayClient(address, client_name='a', reconnect_task=False, extra_headers=h) as a, RelayClient(
        address, client_name='b', reconnect_task=False, extra_headers=h
    ) as b, RelayClient(
        address, client_name='e', reconnect_task=False, extra_headers={'Authorization': f'Bearer {other_user}'}
    ) as e:
        await a.send(offer(a, b.uuid, 'same-user'))
        assert (await recv(b)).description == 'same-user'
        say('OK same user forwarded')
        await e.send(offer(e, a.uuid))
        got = await recv(e)
        assert got.error == f'The requested peer {a.uuid} is owned by a different user.', got.error
        say('OK other user bounced')
        thief = RelayClient(
            address, client_uuid=a.uuid, reconnect_task=False,
            extra_headers={'Authorization': f'Bearer {other_user}'},
        )
        try:
            await asyncio.wait_for(thief.connect(), T)
        except websockets.exceptions.ConnectionClosedError as err:
            assert err.rcvd is not None and err.rcvd.code == 4002, err
            assert err.rcvd.reason == f'ForbiddenError: The client UUID {a.uuid} is already registered to another user.'
            say('OK uuid of another user 4002')
        else:
            raise AssertionError('expected 4002')
    say('PASS auth')


async def oversize(address: str, limit: str) -> None:
    """max_message_bytes: the offender is closed 4003, reconnects by itself and re-registers."""
    n = int(limit)
    async with RelayClient(address, client_name='a') as a, RelayClient(address, client_name='b') as b:
        first_ws = a._websocket  # the public property raises while reconnecting
        await a.send(offer(a, b.uuid, 'x' * n))
        await asyncio.wait_for(first_ws.wait_closed(), T)
        assert first_ws.close_code == 4003, first_ws.close_code
        assert first_ws.close_reason == 'Message length exceeds limit.'
        say('OK closed 4003')
        # The reconnect task re-registers the same uuid; a message then gets through.
        for _ in range(100):
            ws = a._websocket
            if ws is not None and ws is not first_ws and ws.state == websockets.protocol.State.OPEN:
                break
            await asyncio.sleep(0.05)
        await a.send(offer(a, b.uuid, 'small'))
        assert (await recv(b)).description == 'small'
        say('OK reconnected and forwarded')
    say('PASS oversize')


async def frame_limit(address: str) -> None:
    async with RelayClient(address, client_name='a', reconnect_task=False) as a, RelayClient(
        address, client_name='b', reconnect_task=False
    ) as b:
        base = len('{"source_uuid": "%s", "source_name": "a", "peer_uuid": "%s", "description_type": "offer", "description": "", "error": null, "message_type": "peer_connection"}' % (a.uuid, b.uuid))
        await a.send(offer(a, b.uuid, 'x' * (2**20 - base)))
        got = await recv(b)
        assert len(got.description) == 2**20 - base
        say('OK 1 MiB message forwarded')
        ws = a.websocket
        await a.send(offer(a, b.uuid, 'x' * 2**20))
        await asyncio.wait_for(ws.wait_closed(), T)
        assert ws.close_code == 1009, ws.close_code
        say('OK closed 1009', ws.close_reason)
    say('PASS frame_limit')


async def raw_registered(address: str, uid: uuid.UUID | None = None):
    """A plain `websockets` client (no RelayClient), registered; waits for server TCP close."""
    import json

    ws = await websockets.asyncio.client.connect(address, max_size=None, close_timeout=60)
    uid = uid or uuid.uuid4()
    await ws.send(json.dumps({'name': 'raw', 'uuid': str(uid), 'message_type': 'relay_registration'}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), T))
    assert reply['success'] is True, reply
    return ws, uid


async def closed_within(ws, started: float, code: int, what: str) -> None:
    """Checks the close code and that the connection ended well before the relay's close
    timeout (the Rust test starts the relay with --close-timeout 30)."""
    await asyncio.wait_for(ws.wait_closed(), 60)
    elapsed = asyncio.get_running_loop().time() - started
    assert ws.close_code == code, (what, ws.close_code, ws.close_reason)
    assert elapsed < 5, f'{what}: connection ended {elapsed:.1f} s after the close'
    say(f'OK {what} closed {code} promptly')


async def raw_ws(address: str):
    """A WebSocket opened by hand (asyncio streams), to send frames no client library sends."""
    host, port = address.removeprefix('ws://').rsplit(':', 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), T)
    writer.write(
        f'GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'.encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b'\r\n\r\n'), T)
    assert head.startswith(b'HTTP/1.1 101'), head
    return reader, writer


def masked(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked, as RFC 6455 requires), payload under 126 bytes."""
    assert len(payload) < 126
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + body


async def raw_input_error(address: str, frame: bytes, code: int, what: str) -> None:
    """Sends a frame the relay must refuse with `code`; answers the relay's close frame as a
    client library does, then waits for the relay to close TCP."""
    loop = asyncio.get_running_loop()
    reader, writer = await raw_ws(address)
    t0 = loop.time()
    writer.write(frame)
    await writer.drain()
    head = await asyncio.wait_for(reader.readexactly(2), T)
    assert head[0] == 0x88, (what, head)
    payload = await asyncio.wait_for(reader.readexactly(head[1] & 0x7F), T)
    got = int.from_bytes(payload[:2], 'big')
    assert got == code, (what, got, payload[2:])
    try:
        writer.write(masked(8, payload[:2]))
        await writer.drain()
        await asyncio.wait_for(reader.read(), 60)  # until the relay's EOF
    except ConnectionError:
        pass  # a reset ends it too
    elapsed = loop.time() - t0
    writer.close()
    assert elapsed < 5, f'{what}: connection ended {elapsed:.1f} s after the close'
    say(f'OK {what} closed {code} promptly')


async def close_promptly(address: str, mode: str) -> None:
    """After a close the relay initiates, the connection ends at once, not at its close timeout:
    1009 (frame over the limit, raw websockets and RelayClient), 1007 and 1002 (raw frames),
    4003 (RelayClient), and 4004 while a fragmented message is still arriving."""
    loop = asyncio.get_running_loop()
    if mode == 'frame':
        ws, _ = await raw_registered(address)
        t0 = loop.time()
        try:
            await ws.send('x' * 1_100_000)
        except websockets.ConnectionClosed:
            pass
        await closed_within(ws, t0, 1009, 'websockets 1.1 MB frame')
        async with RelayClient(address, client_name='a', reconnect_task=False) as a:
            ws = a.websocket
            t0 = loop.time()
            await a.send(offer(a, uuid.uuid4(), 'x' * 1_100_000))
            await closed_within(ws, t0, 1009, 'RelayClient 1.1 MB message')
    elif mode == 'input_errors':
        # The other closes after an input error (the stream cannot be parsed further).
        await raw_input_error(address, masked(1, b'{"x": "\xff\xfe"}'), 1007, 'invalid UTF-8 text')
        await raw_input_error(address, masked(3, b'x'), 1002, 'reserved opcode')
    elif mode == 'oversize':
        async with RelayClient(address, client_name='a', reconnect_task=False) as a:
            ws = a.websocket
            t0 = loop.time()
            await a.send(offer(a, uuid.uuid4(), 'x' * 10_000))
            await closed_within(ws, t0, 4003, 'RelayClient over max_message_bytes')
    elif mode == 'takeover':
        ws, uid = await raw_registered(address)
        first_sent = asyncio.Event()
        taken_over = asyncio.Event()

        async def fragments():
            yield '{"message_type": "peer_connection", "description": "'
            first_sent.set()
            await taken_over.wait()
            for _ in range(8):
                yield 'x' * 100_000
            yield '"}'

        sending = asyncio.create_task(ws.send(fragments()))
        await asyncio.wait_for(first_sent.wait(), T)
        await asyncio.sleep(0)
        t0 = loop.time()
        b = RelayClient(address, client_uuid=uid, reconnect_task=False)
        await asyncio.wait_for(b.connect(), T)
        taken_over.set()
        await closed_within(ws, t0, 4004, 'takeover during a fragmented message')
        try:
            await sending
        except websockets.ConnectionClosed:
            pass
        await b.close()
    else:
        raise ValueError(mode)
    say('PASS close_promptly')


async def wait_shutdown(address: str) -> None:
    """Registers, says READY, and reports the close code the relay sends at shutdown."""
    c = RelayClient(address, client_name='s', reconnect_task=False)
    await c.connect()
    ws = c.websocket
    say('READY')
    await asyncio.wait_for(ws.wait_closed(), 30)
    say('CLOSED', ws.close_code)


async def peers(address: str) -> None:
    """Two PeerManagers connect over WebRTC through the relay and exchange data."""
    from proxystore.p2p.manager import PeerManager

    r1 = RelayClient(address, client_name='pm1')
    r2 = RelayClient(address, client_name='pm2')
    async with PeerManager(r1, ice_servers=[]) as pm1, PeerManager(r2, ice_servers=[]) as pm2:
        await asyncio.wait_for(pm1.send(pm2.uuid, 'hello over webrtc'), 30)
        src, msg = await asyncio.wait_for(pm2.recv(), 30)
        assert src == pm1.uuid and msg == 'hello over webrtc', (src, msg)
        say('OK webrtc data')
        await asyncio.wait_for(pm2.send(pm1.uuid, b'bytes back'), 30)
        src, msg = await asyncio.wait_for(pm1.recv(), 30)
        assert src == pm2.uuid and msg == b'bytes back', (src, msg)
        say('OK webrtc data back')
    say('PASS peers')


async def tls(address: str) -> None:
    async with RelayClient(address, client_name='a', reconnect_task=False, verify_certificate=False) as a, RelayClient(
        address, client_name='b', reconnect_task=False, verify_certificate=False
    ) as b:
        await a.send(offer(a, b.uuid, 'over tls'))
        assert (await recv(b)).description == 'over tls'
        say('OK wss forwarded')
    say('PASS tls')


async def bad_input(address: str) -> None:
    """4000 for undecodable input (where ProxyStore crashes with 1011), 4002 for forwarding
    before registering; a RelayClient closed 4000 reconnects and is usable again."""
    from websockets.asyncio.client import connect

    for raw in ['hello', '[]', 'null', '{"success": true, "message": null, "error": false, "message_type": "relay_response"}', b'binary']:
        async with connect(address) as ws:
            await ws.send(raw)
            await asyncio.wait_for(ws.wait_closed(), T)
            assert ws.close_code == 4000 and ws.close_reason == 'Unknown message type.', (raw, ws.close_code)
    say('OK undecodable input closed 4000')
    async with connect(address) as ws:
        await ws.send(
            '{"source_uuid": "%s", "source_name": "x", "peer_uuid": "%s", "description_type": "offer", '
            '"description": "d", "error": null, "message_type": "peer_connection"}' % (uuid.uuid4(), uuid.uuid4())
        )
        await asyncio.wait_for(ws.wait_closed(), T)
        assert ws.close_code == 4002, ws.close_code
        say('OK forward before registration closed 4002', ws.close_reason)
    async with RelayClient(address, client_name='a') as a, RelayClient(address, client_name='b') as b:
        first_ws = a._websocket
        await first_ws.send('[]')
        await asyncio.wait_for(first_ws.wait_closed(), T)
        assert first_ws.close_code == 4000, first_ws.close_code
        for _ in range(100):
            ws = a._websocket
            if ws is not None and ws is not first_ws and ws.state == websockets.protocol.State.OPEN:
                break
            await asyncio.sleep(0.05)
        await b.send(offer(b, a.uuid, 'after-4000'))
        assert (await recv(a)).description == 'after-4000'
        say('OK client reconnected after 4000')
    say('PASS bad_input')


SCENARIOS = {
    'bad_input': bad_input,
    'basic': basic,
    'takeover': takeover,
    'auth': auth,
    'oversize': oversize,
    'frame_limit': frame_limit,
    'wait_shutdown': wait_shutdown,
    'close_promptly': close_promptly,
    'peers': peers,
    'tls': tls,
}

if __name__ == '__main__':
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    name, address, *args = sys.argv[1:]
    asyncio.run(SCENARIOS[name](address, *args))
