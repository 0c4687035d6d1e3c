"""pytest plugin: run ProxyStore 1.1.0's own relay tests against `bistream relay serve`.

ProxyStore's `relay_server` fixture (testing/relay_server.py in its sdist) starts its Python
RelayServer in-process. This plugin defines a fixture of the same name that starts our binary
instead (a fresh server per test, as theirs is), so the sdist's test files run unchanged:

    BISTREAM_BIN=target/debug/bistream python -m pytest --noconftest \
        -p bistream_relay_fixture <sdist>/tests/p2p/relay/client_test.py

BISTREAM_REPEAT=N runs `test_relay_server_duplicate_registration` N times (the takeover race
of issue 14, item 9, which failed about one run in four before the fix).
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Iterator
from typing import NamedTuple

import pytest

REPEATED = 'test_relay_server_duplicate_registration'

# Tests that reach into the in-process Python server object (`relay_server.relay_server`);
# they cannot run against a server in another process.
NEEDS_PYTHON_SERVER_OBJECT = {
    'test_expected_server_disconnect',
    'test_unexpected_server_disconnect',
}


class RelayServerInfo(NamedTuple):
    """What ProxyStore's fixture yields, minus its in-process server objects."""

    host: str
    port: int
    address: str


@pytest.fixture()
def relay_server() -> Iterator[RelayServerInfo]:
    binary = os.environ['BISTREAM_BIN']
    proc = subprocess.Popen(
        [binary, 'relay', 'serve', '--host', '127.0.0.1', '--port', '0', '--close-timeout', '1'],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith('BISTREAM_RELAY_')},
    )
    try:
        line = ''
        timer = threading.Timer(20, proc.kill)
        timer.start()
        try:
            line = proc.stdout.readline() if proc.stdout else ''
        finally:
            timer.cancel()
        prefix = 'relay listening on '
        assert line.startswith(prefix), f'unexpected first line {line!r}'
        address = line[len(prefix):].strip()
        port = int(address.rsplit(':', 1)[1])
        yield RelayServerInfo(host='127.0.0.1', port=port, address=address)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    repeat = int(os.environ.get('BISTREAM_REPEAT', '1'))
    if metafunc.function.__name__ == REPEATED and repeat > 1:
        metafunc.fixturenames.append('bistream_repeat')
        metafunc.parametrize('bistream_repeat', range(repeat))


@pytest.fixture()
def bistream_repeat(request: pytest.FixtureRequest) -> int:
    return request.param


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="uses the in-process Python server's internals")
    for item in items:
        if getattr(item, 'originalname', item.name) in NEEDS_PYTHON_SERVER_OBJECT:
            item.add_marker(skip)
