"""Park fan-out: from the park action to the slot update arriving at every member's WebSocket
(seed 3-4; target p95 ≤ 200 ms). Prints figures; no assertions.

N users of one park group each open the real phone WebSocket (the ASGI application in this
process, PhoneConsumer, WebsocketCommunicator); one of them parks calls in slots 1..6 in turn
through phone.actions.do_park (the action the sipworker's line runs), and the time until each
member's `park.slots` message arrives is recorded. Run with the in-memory channel layer (the
embedded default) and with the Redis layer (a throwaway redis-server on a free port).

    .venv/bin/python benchmarks/park_fanout.py                  # 100 members, 30 parks each
    .venv/bin/python benchmarks/park_fanout.py --members 20 --parks 10 --layers memory
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
TMP = Path(tempfile.mkdtemp(prefix="park-fanout-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ["DATABASE_URL"] = f"sqlite:///{TMP / 'db.sqlite3'}"
os.environ["SIPWORKER_EMBEDDED"] = "false"  # slots only: no lines, no SIP
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from channels.db import database_sync_to_async  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from tests.phone.ws import communicator  # noqa: E402
from tests.support.servers import free_port  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def populate(members: int):
    from django.contrib.auth import get_user_model

    from phone.models import ParkGroup
    from portal.models import Profile, Tenant

    call_command("migrate", verbosity=0)
    tenant = Tenant.objects.create(code="bench", name="Bench", pbx_domain="pbx.invalid")
    group = ParkGroup.objects.create(tenant=tenant, name="All")
    users = []
    for i in range(members):
        user = get_user_model().objects.create_user(f"u{i}", password="x")
        Profile.objects.create(user=user, tenant=tenant, display_name=f"User {i}")
        group.members.add(user)
        users.append(user)
    return group, users


async def run(layer: str, group, users, parks: int) -> list[float]:
    from channels.layers import channel_layers

    from phone import actions
    from phone.models import ParkSlot

    channel_layers.backends.clear()  # take the CHANNEL_LAYERS just set
    sockets = [await database_sync_to_async(communicator)(user) for user in users]
    for ws in sockets:
        assert (await ws.connect())[0]
        while (await ws.receive_json_from(timeout=10))["type"] != "park.slots":
            pass
    latencies: list[float] = []
    parker = users[0]
    for n in range(parks):
        slot = n % 6 + 1
        await database_sync_to_async(
            lambda s=slot: ParkSlot.objects.filter(group=group, number=s).update(call_id="")
        )()
        start = time.perf_counter()
        await database_sync_to_async(actions.do_park)(
            parker.pk, group.pk, slot, f"c{n}@bench", "bench", "0312345678", "山田"
        )

        async def arrival(ws, slot=slot):
            while True:
                message = await ws.receive_json_from(timeout=10)
                if message["type"] == "park.slots" and message["slots"][slot - 1]["caller"]:
                    return time.perf_counter()

        arrived = await asyncio.gather(*(arrival(ws) for ws in sockets))
        latencies.extend((t - start) * 1000 for t in arrived)
    for ws in sockets:
        await ws.disconnect()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--parks", type=int, default=30)
    parser.add_argument("--layers", default="memory,redis")
    args = parser.parse_args()
    group, users = populate(args.members)
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
                settings.CHANNEL_LAYERS = {
                    "default": redis_channel_layer(f"redis://127.0.0.1:{port}/0")
                }
            else:
                settings.CHANNEL_LAYERS = {
                    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
                }
            latencies = asyncio.run(run(layer, group, users, args.parks))
            p50, p95 = statistics.median(latencies), percentile(latencies, 95)
            print(
                f"{layer:6s} members={args.members} parks={args.parks}: p50 {p50:.1f} ms,"
                f" p95 {p95:.1f} ms, max {max(latencies):.1f} ms ({len(latencies)} deliveries)"
            )
    finally:
        if redis is not None:
            redis.terminate()
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
