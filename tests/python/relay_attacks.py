"""Issue 14's relay attacks, standalone, against any `bistream` binary (old or new).

Usage: relay_attacks.py BISTREAM_BINARY ATTACK [ATTACK...]

Each attack starts its own `BINARY relay serve` (127.0.0.1, port 0, ops endpoint on), with its
stderr (the log) captured to a temporary file, runs the attack with plain `websockets` clients
(or raw sockets), prints one line `RESULT <attack> <json figures>` and stops the server. Nothing
is asserted: the figures are for docs/RELIABILITY.md, where old (10d60bd) and new binaries are
compared in the same conditions. Attacks:

  close1009    item 3: a registered `websockets` client sends a 1.1 MB frame (limit 1 MiB);
               seconds from the send until the connection is closed (3 tries; server default
               close timeout 5 s)
  logflood     item 5: 200 unauthenticated connections each send a 1 MiB frame whose unknown
               field name is ~1 MB, at --log-level warn; log bytes, longest line
  logflood_dtype  the same with a ~1 MB `description_type` in a `peer_connection` sent
               before registering
  fdcap        item 6: relay under `ulimit -n 300`; opens WebSocket handshakes (up to 320, or
               until 10 in a row are not served): how many got 101, 1013, or hung (3 s); does
               /health answer; log lines mentioning accept
  unregistered item 6: a connection that never registers (answers pings) at default settings:
               closed (code) within 40 s or still open
  forgedname   item 7: a registration name with a newline, a forged log line and ESC bytes, at
               the default level: forged lines and raw ESC bytes in the log
  abrupt       item 8: 1,000 clients register, then drop TCP without a closing handshake; WARN
               lines, lines mentioning 1002, relay_closes_total{code="1002"},
               relay_client_closes_total
  partialframes  1,000 unauthenticated connections each send 1,000,000 bytes of a ~1 MiB
               frame and stall; relay RSS, whether a normal client is served, how many were
               closed 1013 over the large-message budget, seconds until all were closed
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import websockets
import websockets.asyncio.client

T = 20


class Relay:
    def __init__(self, binary: str, args: list[str], env: dict[str, str], ulimit: int | None):
        self.log = tempfile.NamedTemporaryFile(prefix='relay-attack-', suffix='.log', delete=False)
        cmd = [binary, 'relay', 'serve', '--host', '127.0.0.1', '--port', '0',
               '--metrics-addr', '127.0.0.1:0', *args]
        if ulimit is not None:
            cmd = ['sh', '-c', f'ulimit -n {ulimit} && exec "$@"', 'sh', *cmd]
        full_env = {**os.environ, 'NO_COLOR': '1', **env}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=full_env, text=True)
        first = self.proc.stdout.readline().strip()
        second = self.proc.stdout.readline().strip()
        self.url = first.removeprefix('relay listening on ')
        self.ops = second.removeprefix('metrics listening on http://')
        assert self.url.startswith('ws://'), first
        self.addr = self.url.removeprefix('ws://')

    def log_bytes(self) -> bytes:
        self.log.flush()
        with open(self.log.name, 'rb') as f:
            return f.read()

    def metrics(self) -> str:
        with urllib.request.urlopen(f'http://{self.ops}/metrics', timeout=T) as r:
            return r.read().decode()

    def rss_kib(self) -> int:
        with open(f'/proc/{self.proc.pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
        return -1

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(T)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(T)
        os.unlink(self.log.name)


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + ' '):
            return float(line.split()[-1])
    return None


async def registered(url: str, name: str = 'raw', **kw):
    ws = await websockets.asyncio.client.connect(url, max_size=None, **kw)
    uid = uuid.uuid4()
    await ws.send(json.dumps({'name': name, 'uuid': str(uid), 'message_type': 'relay_registration'}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), T))
    assert reply['success'] is True, reply
    return ws


async def close1009(relay: Relay) -> dict:
    loop = asyncio.get_running_loop()
    tries = []
    for _ in range(3):
        ws = await registered(relay.url, close_timeout=60)
        t0 = loop.time()
        try:
            await ws.send('x' * 1_100_000)
        except websockets.ConnectionClosed:
            pass
        await asyncio.wait_for(ws.wait_closed(), 60)
        tries.append({'code': ws.close_code, 'seconds': round(loop.time() - t0, 3)})
    return {'tries': tries}


async def logflood(relay: Relay) -> dict:
    field = 'f' * ((1 << 20) - 100)
    return await flood_with(relay, json.dumps({'message_type': 'relay_registration', field: 1}))


async def logflood_dtype(relay: Relay) -> dict:
    dtype = 'd' * ((1 << 20) - 300)
    return await flood_with(relay, json.dumps({
        'source_uuid': str(uuid.uuid4()), 'source_name': 'x', 'peer_uuid': str(uuid.uuid4()),
        'description_type': dtype, 'description': 'd', 'error': None,
        'message_type': 'peer_connection'}))


async def flood_with(relay: Relay, text: str) -> dict:
    before = len(relay.log_bytes())
    loop = asyncio.get_running_loop()

    async def one():
        ws = await websockets.asyncio.client.connect(relay.url, max_size=None, close_timeout=10)
        try:
            await ws.send(text)
            await asyncio.wait_for(ws.wait_closed(), T)
        except websockets.ConnectionClosed:
            pass
        return ws.close_code

    t0 = loop.time()
    codes = await asyncio.gather(*(one() for _ in range(200)))
    elapsed = loop.time() - t0
    await asyncio.sleep(1)  # let the log writer catch up
    log = relay.log_bytes()[before:]
    lines = log.splitlines()
    # A normal client is still served afterwards.
    a = await registered(relay.url, 'a')
    await a.close()
    rss_after = relay.rss_kib()
    await asyncio.sleep(15)
    return {
        'relay_rss_kib_after': rss_after,
        'relay_rss_kib_15s_later': relay.rss_kib(),
        'close_codes': sorted(set(c for c in codes if c is not None)),
        'seconds': round(elapsed, 2),
        'log_bytes': len(log),
        'log_lines': len(lines),
        'longest_line': max((len(line) for line in lines), default=0),
    }


def raw_handshake(addr: str, wait: float) -> tuple[str, socket.socket | None]:
    host, port = addr.rsplit(':', 1)
    s = socket.create_connection((host, int(port)), timeout=wait)
    s.settimeout(wait)
    s.sendall((f'GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
               'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n').encode())
    got = b''
    try:
        while b'\r\n\r\n' not in got:
            b = s.recv(4096)
            if not b:
                s.close()
                return 'eof', None
            got += b
    except TimeoutError:
        s.close()
        return 'hung', None
    if not got.startswith(b'HTTP/1.1 101'):
        s.close()
        return 'http ' + got.split(b'\r\n', 1)[0].decode(errors='replace'), None
    rest = got.split(b'\r\n\r\n', 1)[1]
    if len(rest) >= 4 and rest[0] == 0x88:
        s.close()
        return f'closed {int.from_bytes(rest[2:4], "big")}', None
    return '101', s


def fdcap(relay: Relay) -> dict:
    held, outcomes = [], {}
    first_refused, misses = None, 0
    for i in range(320):
        if misses >= 10:
            break
        try:
            what, s = raw_handshake(relay.addr, 3)
        except (TimeoutError, OSError) as e:
            what, s = f'connect error {type(e).__name__}', None
        outcomes[what] = outcomes.get(what, 0) + 1
        if s is not None:
            held.append(s)
            misses = 0
        else:
            misses += 1
            if first_refused is None:
                first_refused = i + 1
    # A close frame that came after the 101 (a 1013 above the cap) is found here.
    time.sleep(1)
    for s in list(held):
        s.setblocking(False)
        try:
            b = s.recv(4)
        except BlockingIOError:
            continue
        except OSError:
            b = b''
        what = f'closed {int.from_bytes(b[2:4], "big")}' if len(b) >= 4 and b[0] == 0x88 else 'eof'
        outcomes['101'] -= 1
        outcomes[what] = outcomes.get(what, 0) + 1
        held.remove(s)
        s.close()
    try:
        with urllib.request.urlopen(f'http://{relay.ops}/health', timeout=3) as r:
            health = f'{r.status} {r.read().decode()[:120]}'
    except Exception as e:  # noqa: BLE001 - any failure is the figure
        health = f'no answer ({type(e).__name__})'
    time.sleep(2)
    log = relay.log_bytes().decode(errors='replace')
    for s in held:
        s.close()
    return {
        'outcomes': outcomes,
        'first_not_served': first_refused,
        'health': health,
        'accept_error_lines': sum(1 for line in log.splitlines() if 'accept' in line.lower()),
        'cap_lines': [line[-160:] for line in log.splitlines() if 'cap' in line.lower()][:2],
    }


async def unregistered(relay: Relay) -> dict:
    loop = asyncio.get_running_loop()
    ws = await websockets.asyncio.client.connect(relay.url, close_timeout=10)
    t0 = loop.time()
    try:
        await asyncio.wait_for(ws.wait_closed(), 40)
        return {'closed': True, 'code': ws.close_code, 'after_seconds': round(loop.time() - t0, 1)}
    except TimeoutError:
        await ws.close()
        return {'closed': False, 'still_open_after_seconds': 40}


async def forgedname(relay: Relay) -> dict:
    forged = 'innocent\n2026-01-01T00:00:00.000000Z  INFO bistream: registered client name=admin\x1b[31m'
    ws = await registered(relay.url, forged)
    await asyncio.sleep(1)
    await ws.close()
    log = relay.log_bytes()
    return {
        'forged_lines': sum(1 for line in log.splitlines() if line.startswith(b'2026-01-01')),
        'raw_esc_bytes': log.count(b'\x1b'),
        'escaped_name_logged': b'innocent\\n2026' in log,
    }


async def abrupt(relay: Relay) -> dict:
    clients = []
    for i in range(0, 1000, 100):
        clients += await asyncio.gather(*(registered(relay.url, f'c{j}') for j in range(i, i + 100)))
    before = relay.log_bytes()
    for ws in clients:
        ws.transport.abort()  # close the socket at once: no close frame, no closing handshake
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:
        m = relay.metrics()
        if (metric(m, 'relay_connections_open') or 0) == 0:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    log = relay.log_bytes()[len(before):].decode(errors='replace').splitlines()
    m = relay.metrics()
    closes_1002 = next((float(line.split()[-1]) for line in m.splitlines()
                        if line.startswith('relay_closes_total{code="1002"}')), None)
    return {
        'warn_lines': sum(1 for line in log if ' WARN ' in line),
        'lines_mentioning_1002': sum(1 for line in log if '1002' in line),
        'relay_closes_total_1002': closes_1002,
        'relay_client_closes_total': metric(m, 'relay_client_closes_total'),
        'connections_open': metric(m, 'relay_connections_open'),
    }


def partialframes(relay: Relay) -> dict:
    """1,000 connections each start a ~1 MiB text frame, send 1,000,000 bytes of it and stall."""
    time.sleep(1)
    base = relay.rss_kib()
    announced, sent = 1_040_000, 1_000_000
    frame = bytes([0x81, 0x80 | 127]) + announced.to_bytes(8, 'big') + b'\0\0\0\0' + b'x' * sent
    held = []
    for _ in range(1000):
        what, s = raw_handshake(relay.addr, 5)
        if s is None:
            break
        s.settimeout(10)
        s.sendall(frame)
        held.append(s)
    time.sleep(3)
    peak = relay.rss_kib()

    async def normal() -> bool:
        ws = await registered(relay.url, 'normal')
        await ws.close()
        return True

    served = asyncio.run(normal())
    refused = metric(relay.metrics(), 'relay_large_message_budget_closes_total')
    t0 = time.monotonic()
    open_after = None
    while time.monotonic() - t0 < 60:
        if (metric(relay.metrics(), 'relay_connections_open') or 0) == 0:
            open_after = round(time.monotonic() - t0, 1)
            break
        time.sleep(0.5)
    for s in held:
        s.close()
    return {
        'connections': len(held),
        'rss_before_kib': base,
        'rss_with_stalled_frames_kib': peak,
        'normal_client_served': served,
        'closed_1013_over_budget': refused,
        'all_closed_within_seconds': open_after,
    }


ATTACKS = {
    'close1009': ([], {}, None),
    'logflood': ([], {'BISTREAM_LOG_LEVEL': 'warn'}, None),
    'logflood_dtype': ([], {'BISTREAM_LOG_LEVEL': 'warn'}, None),
    'fdcap': (['--ping-interval', '0'], {'BISTREAM_LOG_LEVEL': 'info'}, 300),
    'unregistered': ([], {}, None),
    'forgedname': ([], {'BISTREAM_LOG_LEVEL': 'info'}, None),
    'abrupt': ([], {'BISTREAM_LOG_LEVEL': 'info'}, None),
    'partialframes': ([], {'BISTREAM_LOG_LEVEL': 'warn'}, None),
}


def main() -> None:
    binary, names = sys.argv[1], sys.argv[2:]
    for name in names:
        args, env, ulimit = ATTACKS[name]
        relay = Relay(binary, args, env, ulimit)
        try:
            fn = globals()[name]
            res = asyncio.run(fn(relay)) if asyncio.iscoroutinefunction(fn) else fn(relay)
            res['relay_rss_kib'] = relay.rss_kib()
        finally:
            relay.stop()
        print('RESULT', name, json.dumps(res), flush=True)


if __name__ == '__main__':
    main()
