"""Boundaries of design.md §8: a web process (production: the sipworker runs elsewhere) serves the
phone page and its WebSocket without loading the SIP or media stack."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.phone.ws import session_cookie
from tests.support.servers import database_url

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = """
import asyncio, sys
import django
django.setup()
from django.test import Client
from channels.testing import WebsocketCommunicator
from portal.asgi import application

cookie = sys.argv[1]
name, _, value = cookie.partition("=")
client = Client(HTTP_HOST="127.0.0.1")
client.cookies[name] = value
page = client.get("/")
assert page.status_code == 200, page.status_code

async def socket():
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    headers.append((b"cookie", cookie.encode()))
    ws = WebsocketCommunicator(application, "/ws/phone/", headers=headers)
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "ping", "id": 1})
    while (await ws.receive_json_from())["type"] != "pong":
        pass  # what a page gets on connect (the colleagues' lamps) comes first
    await ws.send_json_to({"type": "dial", "number": "1002"})
    await ws.disconnect()

asyncio.run(socket())
heavy = sorted(m for m in sys.modules if m.split(".")[:2] in (["phone", "sip"], ["phone", "media"])
               or m.split(".")[0] in ("aiortc", "av"))
print("LOADED", heavy)
"""


def test_a_web_process_never_loads_the_sip_and_media_stack(cast):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": database_url(),
        "SIPWORKER_EMBEDDED": "false",
        "DEBUG": "true",
    }
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, session_cookie(cast.alice)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout
