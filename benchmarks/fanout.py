"""What the fan-out benchmarks share (park_fanout.py, presence_fanout.py): Django on a
throwaway SQLite database with no embedded sipworker, pages as real phone WebSockets (the ASGI
application in this process: PhoneConsumer through WebsocketCommunicator), the channel layer in
memory or on a throwaway redis-server, and latencies printed as percentiles.

Import it before anything of Django: it sets the environment up and calls django.setup().
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = Path(tempfile.mkdtemp(prefix="fanout-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ["DATABASE_URL"] = f"sqlite:///{TMP / 'db.sqlite3'}"
os.environ["SIPWORKER_EMBEDDED"] = "false"  # pages only: no lines, no SIP
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


def migrate() -> None:
    call_command("migrate", verbosity=0)


async def open_page(user: Any, first: str) -> Any:
    """A phone WebSocket of `user`, once its first message of type `first` has come."""
    ws = await database_sync_to_async(communicator)(user)
    assert (await ws.connect())[0]
    while (message := await ws.receive_json_from(timeout=10))["type"] != first:
        pass
    ws.first = message
    return ws


async def open_pages(users: list[Any], first: str) -> list[Any]:
    from channels.layers import channel_layers

    channel_layers.backends.clear()  # take the CHANNEL_LAYERS just set
    return [await open_page(user, first) for user in users]


async def arrivals(
    sockets: list[Any], started: float, arrived: Callable[[dict[str, Any]], bool]
) -> list[float]:
    """Milliseconds from `started` (perf_counter) until each page got a message `arrived`
    says is the one."""

    async def one(ws: Any) -> float:
        while True:
            message = await ws.receive_json_from(timeout=10)
            if arrived(message):
                return (time.perf_counter() - started) * 1000

    return list(await asyncio.gather(*(one(ws) for ws in sockets)))


def run_layers(
    layers: str,
    run: Callable[[], Awaitable[list[float]]],
    label: str,
    *,
    redis_store: bool = False,
) -> None:
    """run() on each channel layer of `layers` ("memory,redis") and print its percentiles;
    `redis_store`: REDIS_URL points at the same Redis too (stores several sipworkers share)."""
    redis = None
    try:
        for layer in layers.split(","):
            if layer == "redis":
                from portal.settings import redis_channel_layer

                port = free_port()
                redis = subprocess.Popen(
                    ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                    stdout=subprocess.DEVNULL,
                )
                time.sleep(0.5)
                url = f"redis://127.0.0.1:{port}/0"
                settings.REDIS_URL = url if redis_store else ""
                settings.CHANNEL_LAYERS = {"default": redis_channel_layer(url)}
            else:
                settings.REDIS_URL = ""
                settings.CHANNEL_LAYERS = {
                    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
                }
            latencies = asyncio.run(run())
            p50, p95 = statistics.median(latencies), percentile(latencies, 95)
            print(
                f"{layer:6s} {label}: p50 {p50:.1f} ms, p95 {p95:.1f} ms,"
                f" max {max(latencies):.1f} ms ({len(latencies)} deliveries)"
            )
    finally:
        if redis is not None:
            redis.terminate()
        shutil.rmtree(TMP, ignore_errors=True)
