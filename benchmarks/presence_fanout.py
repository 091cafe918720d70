"""Presence fan-out (BLF, issue 13): from a line's state change to the lamp update arriving at
every colleague's WebSocket (target p95 ≤ 200 ms). Prints figures; no assertions.

N users of one tenant each open the real phone WebSocket (the ASGI application in this process,
PhoneConsumer, WebsocketCommunicator); one line changes state in turn (idle → ringing → busy →
idle ...) through phone.presence.publish, the call the sipworker's Line makes after a message
changed its state (store write, then the tenant group send), and the time until each page's
`presence` message with that state arrives is recorded. Run with the in-memory channel layer
and store (the embedded default) and with Redis as both (a throwaway redis-server on a free
port; REDIS_URL set, so the store is the Redis hash several sipworkers would write).

    .venv/bin/python benchmarks/presence_fanout.py                  # 100 pages, 30 changes
    .venv/bin/python benchmarks/presence_fanout.py --pages 20 --changes 10 --layers memory
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = Path(tempfile.mkdtemp(prefix="presence-fanout-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ["DATABASE_URL"] = f"sqlite:///{TMP / 'db.sqlite3'}"
os.environ["SIPWORKER_EMBEDDED"] = "false"  # lamps only: no lines, no SIP
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from channels.db import database_sync_to_async  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from tests.phone.ws import communicator  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

STATES = ["ringing", "busy", "idle"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def populate(pages: int):
    from django.contrib.auth import get_user_model

    from portal.models import Profile, SipAccount, Tenant

    call_command("migrate", verbosity=0)
    tenant = Tenant.objects.create(code="bench", name="Bench", pbx_domain="pbx.invalid")
    users = []
    for i in range(pages + 1):
        user = get_user_model().objects.create_user(f"u{i}", password="x")
        Profile.objects.create(user=user, tenant=tenant, display_name=f"User {i}")
        SipAccount.objects.create(tenant=tenant, user=user, extension=str(2000 + i))
        users.append(user)
    return tenant, users


async def run(tenant, users, changes: int) -> list[float]:
    from channels.layers import channel_layers

    from phone import presence
    from phone.signalling import owners

    channel_layers.backends.clear()  # take the CHANNEL_LAYERS just set
    presence.reset_memory()
    worker = "bench-worker"
    if owners.enabled():  # the store reads entries of live workers only
        await owners.client().set(owners.worker_key(worker), "1", px=600_000)
    line, pages = users[0], users[1:]
    sockets = [await database_sync_to_async(communicator)(user) for user in pages]
    for ws in sockets:
        assert (await ws.connect())[0]
        while (await ws.receive_json_from(timeout=10))["type"] != "presence":
            pass  # the snapshot
    latencies: list[float] = []
    for n in range(changes):
        state = STATES[n % len(STATES)]
        entry = presence.Entry("2000", state, line.pk, time.time(), worker)
        start = time.perf_counter()
        await presence.publish(tenant.pk, entry)

        async def arrival(ws, state=state):
            while True:
                message = await ws.receive_json_from(timeout=10)
                if message["type"] == "presence" and message["entries"][0]["state"] == state:
                    return time.perf_counter()

        arrived = await asyncio.gather(*(arrival(ws) for ws in sockets))
        latencies.extend((t - start) * 1000 for t in arrived)
    # A page that attaches now reads the last state from the store.
    ws = await database_sync_to_async(communicator)(pages[0])
    assert (await ws.connect())[0]
    while (snapshot := await ws.receive_json_from(timeout=10))["type"] != "presence":
        pass
    assert snapshot["full"] and snapshot["entries"][0]["extension"] == "2000", snapshot
    await ws.disconnect()
    for ws in sockets:
        await ws.disconnect()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--layers", default="memory,redis")
    args = parser.parse_args()
    tenant, users = populate(args.pages)
    redis = None
    try:
        for layer in args.layers.split(","):
            if layer == "redis":
                from portal.settings import redis_channel_layer

                port = free_port()
                redis = subprocess.Popen(
                    ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                    stdout=subprocess.DEVNULL,
                )
                time.sleep(0.5)
                url = f"redis://127.0.0.1:{port}/0"
                settings.REDIS_URL = url  # the presence store in Redis too
                settings.CHANNEL_LAYERS = {"default": redis_channel_layer(url)}
            else:
                settings.REDIS_URL = ""
                settings.CHANNEL_LAYERS = {
                    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
                }
            latencies = asyncio.run(run(tenant, users, args.changes))
            p50, p95 = statistics.median(latencies), percentile(latencies, 95)
            print(
                f"{layer:6s} pages={args.pages} changes={args.changes}: p50 {p50:.1f} ms,"
                f" p95 {p95:.1f} ms, max {max(latencies):.1f} ms ({len(latencies)} deliveries)"
            )
    finally:
        if redis is not None:
            redis.terminate()
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
