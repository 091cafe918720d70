"""Lamps for PBX extensions that are no line of ours (issue 13): the PBX's dialog event
package (RFC 4235 over RFC 6665 SUBSCRIBE/NOTIFY), published like our own lines' lamps.

Which extensions: phone.presence.pbx_extensions (the tenant's internal extensions on its
users' pages that are not an active SIP account of the tenant; at most 100).

Who subscribes: one line per tenant, not one per user. On each sipworker the tenant's first
line that registers is elected (`Watchers`, one per host); when it stops, the next registered
line of the tenant on that worker takes over. With several sipworkers (Redis) the elected line
also needs the tenant's lease `bp:blf:<tenant>` (SET NX PX, renewed every TICK_SECONDS while
it watches, the pattern of phone.signalling.owners): only the worker holding it subscribes,
and when it stops (lease released) or dies (lease expires) another worker's elected line takes
the lease at its next tick.

The elected line does the SIP (its UserAgent keeps the subscriptions, phone.sip.subscription)
and turns the UserAgent's WatchedLamp events into presence entries (user id 0). Each tick it
reads the extension list again, so phonebook and button changes are picked up without a
restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async

from phone import presence
from phone.signalling import owners
from phone.sip.errors import SipError
from phone.worker import db

if TYPE_CHECKING:
    from phone.worker.line import Line

log = logging.getLogger(__name__)

# How long a subscription is asked for (the PBX may grant less; refreshed at half).
EXPIRES = 600
# How often the elected line re-reads the extensions and renews the tenant's lease.
TICK_SECONDS = 10.0
LEASE_MS = 30_000

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_HOLD = """
local v = redis.call('get', KEYS[1])
if v == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not v then return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""


def lease_key(tenant_id: int) -> str:
    return f"bp:blf:{tenant_id}"


@dataclass(frozen=True, slots=True)
class WatchTick:
    """Line input: (re)check the watched extensions and the lease."""


async def hold_lease(tenant_id: int, worker_id: str) -> bool:
    """Take or renew the tenant's watch lease; True when this worker holds it."""
    if not owners.enabled():
        return True
    result = await owners.client().eval(_HOLD, 1, lease_key(tenant_id), worker_id, LEASE_MS)
    return bool(result)


async def release_lease(tenant_id: int, worker_id: str) -> None:
    if owners.enabled():
        await owners.client().eval(_RELEASE, 1, lease_key(tenant_id), worker_id)


class Watchers:
    """Per host: which of its lines watches the PBX extensions of each tenant."""

    def __init__(self) -> None:
        self.elected: dict[int, Line] = {}

    def line_registered(self, line: Line) -> None:
        config = line.config
        if config is None:
            return
        current = self.elected.get(config.tenant_id)
        if current is not None and not current.closed and current.transport is not None:
            return
        self.elected[config.tenant_id] = line
        line.watch = LineWatch(line)
        line.post(WatchTick())

    def line_stopped(self, line: Line, candidates: list[Line]) -> None:
        """`line` stopped watching: the next registered line of its tenant takes over."""
        tenant = next((t for t, elected in self.elected.items() if elected is line), None)
        if tenant is None:
            return
        del self.elected[tenant]
        for other in candidates:
            if (
                other is not line
                and not other.closed
                and other.config is not None
                and other.config.tenant_id == tenant
                and other.registration[0] == "registered"
            ):
                self.line_registered(other)
                return


class LineWatch:
    """The elected line's side: its subscriptions and what it published."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self.extensions: set[str] = set()
        self.published: set[str] = set()
        self.leased = False
        self._timer: Any = None

    @property
    def tenant_id(self) -> int:
        assert self.line.config is not None
        return self.line.config.tenant_id

    async def tick(self) -> None:
        """Re-read the extensions, renew (or take) the lease, subscribe/unsubscribe the
        difference; then come back in TICK_SECONDS."""
        line = self.line
        if line.closed or line.transport is None or line.config is None:
            return
        self._timer = asyncio.get_running_loop().call_later(TICK_SECONDS, line.post, WatchTick())
        was = self.leased
        try:
            self.leased = await hold_lease(self.tenant_id, line.host.worker_id)
        except Exception:
            log.exception("line %s: the BLF lease could not be renewed", line.user_id)
            self.leased = False
        if self.leased != was:
            log.info(
                "line %s: %s the PBX lamps of tenant %s",
                line.user_id,
                "watches" if self.leased else "no longer watches",
                self.tenant_id,
            )
        wanted: set[str] = set()
        if self.leased:
            wanted = set(await database_sync_to_async(db.pbx_extensions)(self.tenant_id))
        for extension in sorted(self.extensions - wanted):
            # Lease lost (another worker holds it now): its entries are the new holder's.
            await self._unwatch(extension, withdraw=self.leased)
        for extension in sorted(wanted - self.extensions):
            with contextlib.suppress(SipError):
                watch = functools.partial(
                    line.ua.watch_dialogs, extension=extension, expires=EXPIRES
                )
                line._sip(watch)
                self.extensions.add(extension)

    async def _unwatch(self, extension: str, *, withdraw: bool = True) -> None:
        line = self.line
        self.extensions.discard(extension)
        if line.transport is not None:
            with contextlib.suppress(SipError):
                line._sip(lambda now: line.ua.unwatch_dialogs(now, extension))
        if extension in self.published:
            self.published.discard(extension)
            if withdraw:
                await self._withdraw(extension)

    async def publish(self, extension: str, state: str) -> None:
        """A watched extension's lamp changed (the UserAgent's WatchedLamp)."""
        if extension not in self.extensions:
            return  # a NOTIFY racing our un-SUBSCRIBE
        if state == presence.OFFLINE:
            if extension in self.published:
                self.published.discard(extension)
                await self._withdraw(extension)
            return
        entry = presence.Entry(extension, state, 0, time.time(), self.line.host.worker_id)
        try:
            await presence.publish(self.tenant_id, entry)
        except Exception:
            log.exception("line %s: publishing %s failed", self.line.user_id, extension)
            return
        self.published.add(extension)

    async def _withdraw(self, extension: str) -> None:
        try:
            await presence.withdraw_pbx(self.tenant_id, extension)
        except Exception:
            log.exception("line %s: withdrawing %s failed", self.line.user_id, extension)

    async def stop(self, *, unsubscribe: bool = True) -> None:
        """Un-SUBSCRIBE everything (the line still has its transport; not when the line was
        fenced: not one more SIP message then), lamps offline, lease released."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for extension in sorted(self.extensions):
            if unsubscribe:
                await self._unwatch(extension)
            else:
                self.extensions.discard(extension)
                if extension in self.published:
                    self.published.discard(extension)
                    await self._withdraw(extension)
        if self.leased:
            with contextlib.suppress(Exception):
                await release_lease(self.tenant_id, self.line.host.worker_id)
            self.leased = False
