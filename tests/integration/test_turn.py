"""The TURN credentials of the phone page (portal.turn) against the real coturn of compose.yaml
(deploy/coturn/entrypoint.sh with its turnserver.conf, Debian package `coturn`).

coturn accepts an allocation with credentials derived from its static-auth-secret, and refuses
another secret and an expired username.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint

from portal.turn import turn_credentials
from tests.support import children
from tests.support.fixtures import require_program
from tests.support.ports import release_ports, reserve_ports

pytestmark = pytest.mark.integration

ENTRYPOINT = Path(__file__).resolve().parents[2] / "deploy" / "coturn" / "entrypoint.sh"
SECRET = "a-shared-secret-for-this-test-only"
RELAY_PORTS = 10


@pytest.fixture(scope="module")
def coturn(tmp_path_factory):
    binary = shutil.which("turnserver")
    require_program(binary, "turnserver", "coturn")
    port = reserve_ports(1)
    relay = reserve_ports(RELAY_PORTS, tcp=False)
    log_path = tmp_path_factory.mktemp("coturn") / "coturn.log"
    env = {
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "TURN_SECRET": SECRET,
        "TURN_PORT": str(port),
        "TURN_LISTEN_IP": "127.0.0.1",
        "TURN_MIN_PORT": str(relay),
        "TURN_MAX_PORT": str(relay + RELAY_PORTS - 1),
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            children.command([str(ENTRYPOINT)], "TERM"),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    children.track(proc)
    try:
        deadline = time.monotonic() + 10
        while "Total General servers" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "coturn did not start"
            time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        children.untrack(proc)
        release_ports(port)
        release_ports(relay, RELAY_PORTS)
        print(log_path.read_text(errors="replace")[-3000:])


async def allocate(server, username: str, password: str):
    transport, _ = await asyncio.wait_for(
        create_turn_endpoint(asyncio.DatagramProtocol, server, username, password), 5
    )
    return transport


async def test_coturn_accepts_the_credentials_the_page_gets(coturn):
    username, password = turn_credentials(7, secret=SECRET, ttl=600)
    transport = await allocate(coturn, username, password)
    try:
        relayed = transport.get_extra_info("sockname")
        assert relayed[0] == "127.0.0.1" and relayed[1] >= 1024
    finally:
        transport.close()


async def test_coturn_refuses_another_secret(coturn):
    username, password = turn_credentials(7, secret="not-the-secret", ttl=600)
    with pytest.raises(TransactionFailed, match="401"):
        await allocate(coturn, username, password)


async def test_coturn_refuses_expired_credentials(coturn):
    username, password = turn_credentials(7, secret=SECRET, ttl=600, now=time.time() - 3600)
    with pytest.raises(TransactionFailed, match="401"):
        await allocate(coturn, username, password)
