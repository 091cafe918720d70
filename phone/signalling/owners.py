"""Which sipworker owns each user's line, with several sipworkers on Redis (design.md §2).

One lease per user in Redis, `bp:owner:<user>` = the owning worker's id, expiring after
LEASE_MS unless the owner renews it (every RENEW_SECONDS, for all its lines at once). Pages
reach the owner on its own channel (`sipworker.<worker id>`). When a worker dies its leases
lapse and the next page message (or the next heartbeat of a live worker) claims the line for
the least-loaded live worker, which registers it again.

Fencing: a worker whose renewal fails, or that could not renew for FENCE_MS (< LEASE_MS), stops
the line at once without another SIP message; a lease can only be claimed once it has expired
(SET NX), so the old owner is silent before the new one starts. `bp:fence:<user>` counts the
claims (the token each owner logs).

Live workers: `bp:worker:<id>` (expires after WORKER_TTL_MS) and their load in the hash
`bp:load` (lines owned, counted up at each claim and reset by the worker from its real count).

Without REDIS_URL (the embedded default) there is one worker in the web process and none of
this applies: `enabled()` is False and everything goes to WORKER_CHANNEL.
"""

from __future__ import annotations

import random
from typing import Any

from django.conf import settings

from phone.signalling.protocol import WORKER_CHANNEL

LEASE_MS = 5000
FENCE_MS = 3500
RENEW_SECONDS = 1.0
WORKER_TTL_MS = 4000
LOAD = "bp:load"

_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('pexpire', key, ARGV[2])
  else
    table.insert(lost, key)
  end
end
return lost
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def enabled() -> bool:
    return bool(settings.REDIS_URL) and not settings.SIPWORKER_EMBEDDED


def owner_key(user_id: int) -> str:
    return f"bp:owner:{user_id}"


def worker_key(worker_id: str) -> str:
    return f"bp:worker:{worker_id}"


def channel_of(worker_id: str | None) -> str:
    """The channel a worker reads (WORKER_CHANNEL for the embedded one)."""
    return f"sipworker.{worker_id}" if worker_id and enabled() else WORKER_CHANNEL


_clients: dict[Any, Any] = {}


def client() -> Any:
    """An asyncio Redis client for this event loop."""
    import asyncio

    import redis.asyncio

    key = (asyncio.get_running_loop(), settings.REDIS_URL)
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = redis.asyncio.from_url(settings.REDIS_URL)
    return found


def sync_client() -> Any:
    import redis

    key = ("sync", settings.REDIS_URL)
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = redis.from_url(settings.REDIS_URL)
    return found


async def owner_of(user_id: int) -> str | None:
    value = await client().get(owner_key(user_id))
    return value.decode() if value else None


def owner_of_sync(user_id: int) -> str | None:
    value = sync_client().get(owner_key(user_id))
    return value.decode() if value else None


async def live_workers() -> dict[str, int]:
    """Live worker id → lines it owns."""
    r = client()
    ids = [key.decode().split(":", 2)[2] async for key in r.scan_iter("bp:worker:*")]
    loads = await r.hmget(LOAD, ids) if ids else []
    return {wid: int(load or 0) for wid, load in zip(ids, loads, strict=True)}


async def claim(user_id: int) -> str | None:
    """The worker that owns the user's line: the current owner if it lives, else the least
    loaded live worker (claimed atomically); None while a dead owner's lease has not lapsed
    or no worker lives."""
    r = client()
    owner = await owner_of(user_id)
    if owner is not None:
        return owner if await r.exists(worker_key(owner)) else None
    workers = await live_workers()
    if not workers:
        return None
    least = min(workers.values())
    pick = random.choice([wid for wid, load in workers.items() if load == least])
    if await r.set(owner_key(user_id), pick, nx=True, px=LEASE_MS):
        await r.incr(f"bp:fence:{user_id}")
        await r.hincrby(LOAD, pick, 1)
        return pick
    return await owner_of(user_id)


async def announce(worker_id: str, lines: int) -> None:
    """A worker is alive and owns `lines` lines (every heartbeat)."""
    r = client()
    await r.set(worker_key(worker_id), lines, px=WORKER_TTL_MS)
    await r.hset(LOAD, worker_id, lines)


async def renew(worker_id: str, user_ids: list[int]) -> set[int]:
    """Extend this worker's leases; the users whose lease it no longer holds."""
    if not user_ids:
        return set()
    keys = [owner_key(uid) for uid in user_ids]
    lost = await client().eval(_RENEW, len(keys), *keys, worker_id, LEASE_MS)
    return {int(key.decode().rsplit(":", 1)[1]) for key in lost}


async def fence_token(user_id: int) -> int:
    value = await client().get(f"bp:fence:{user_id}")
    return int(value or 0)


async def release(worker_id: str, user_id: int) -> None:
    """A line stopped cleanly: its lease goes at once (the next page may pick any worker)."""
    await client().eval(_RELEASE, 1, owner_key(user_id), worker_id)


async def retire(worker_id: str) -> None:
    """A worker stops: it no longer counts as live."""
    r = client()
    await r.delete(worker_key(worker_id))
    await r.hdel(LOAD, worker_id)
