"""Colleague presence (BLF, issue 13): what each of our lines is doing, for the lamps of a
tenant's phonebook entries and one-touch buttons (design.md §5 `presence-lamp`).

The line (phone.worker.line) is the only writer: after every message it handled it computes
its user's state with `line_state` (the one place that says how a line maps to a lamp) and,
when that changed, `publish`es it: into the presence store, then to the tenant's channel-layer
group, so every open page of the tenant hears it. A page that attaches reads `snapshot`.

The store, and why there:
- with several sipworkers (REDIS_URL, phone.signalling.owners.enabled()) one Redis hash per
  tenant, `bp:presence:<tenant>`, field = extension, in the Redis the channel layer and the
  leases already use: any web process reads it, lines of every worker write it, and nothing
  new has to run. Each entry names the worker that wrote it; a snapshot leaves out entries of
  workers that stopped beating (`bp:worker:<id>` expired), so a dead worker's lines read
  offline without anyone cleaning up after it.
- in the embedded default (one process, in-memory channel layer) a dict in this module: the
  worker and every consumer share the process, and nothing survives a restart that should.

Only extensions with a running line are in the store; a page shows every other colleague's
lamp as offline.

Extensions of the PBX that are no line of ours (`pbx_extensions`) are watched by one line of
the tenant (phone.worker.blf, RFC 4235 dialog event package) and published the same way, with
user id 0 (no user: never a pickup group member).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from phone.signalling import owners

log = logging.getLogger(__name__)

# The lamp states (design.md §5), in the order a page may see them for one line.
IDLE, RINGING, BUSY, DND, OFFLINE = "idle", "ringing", "busy", "dnd", "offline"
STATES = (IDLE, RINGING, BUSY, DND, OFFLINE)

# Channel-layer event type: consumer method presence_changed.
PRESENCE_CHANGED = "presence.changed"


def tenant_group(tenant_id: int) -> str:
    """Every open phone page of one tenant (the presence lamps)."""
    return f"presence.{tenant_id}"


def line_state(*, registered: bool, phases: Iterable[str], dnd: bool) -> str:
    """A user's lamp from their line: offline unless registered; ringing while a call rings
    here (over busy: a colleague can still take it, 代理応答); busy while any call of theirs is
    being dialled, up or held; dnd when they asked not to be disturbed; else idle."""
    if not registered:
        return OFFLINE
    phases = set(phases)
    if "incoming" in phases:
        return RINGING
    if phases & {"dialing", "ringing", "incall", "held"}:
        return BUSY
    return DND if dnd else IDLE


@dataclass(frozen=True)
class Entry:
    extension: str
    state: str
    user_id: int
    since: float  # when the line entered this state (group pickup takes the oldest ringing)
    worker: str = ""

    def public(self) -> dict[str, Any]:
        """What a page gets: no user ids, no worker names."""
        return {"extension": self.extension, "state": self.state}


# -- the store ----------------------------------------------------------------------------------

_memory: dict[int, dict[str, Entry]] = {}


def _key(tenant_id: int) -> str:
    return f"bp:presence:{tenant_id}"


async def _store(tenant_id: int, entry: Entry) -> None:
    if not owners.enabled():
        entries = _memory.setdefault(tenant_id, {})
        if entry.state == OFFLINE:
            entries.pop(entry.extension, None)
        else:
            entries[entry.extension] = entry
        return
    r = owners.client()
    if entry.state == OFFLINE:
        await r.hdel(_key(tenant_id), entry.extension)
        return
    value = json.dumps({"s": entry.state, "u": entry.user_id, "t": entry.since, "w": entry.worker})
    await r.hset(_key(tenant_id), entry.extension, value)


async def snapshot(tenant_id: int) -> list[Entry]:
    """Every line of the tenant that is not offline, as the store has it now."""
    if not owners.enabled():
        return list(_memory.get(tenant_id, {}).values())
    r = owners.client()
    raw = await r.hgetall(_key(tenant_id))
    entries = []
    for field, value in raw.items():
        try:
            data = json.loads(value)
            entry = Entry(field.decode(), data["s"], int(data["u"]), float(data["t"]), data["w"])
        except (ValueError, KeyError, TypeError):
            continue
        if entry.state in STATES:
            entries.append(entry)
    # A dead worker's lines are offline: its beat key (bp:worker:<id>) has expired.
    live = {w for w in {e.worker for e in entries} if await r.exists(owners.worker_key(w))}
    return [e for e in entries if e.worker in live]


async def publish(tenant_id: int, entry: Entry) -> None:
    """Store the line's new state, then tell every page of the tenant (the store first: a page
    attaching in between reads the new state, never an older one after the event)."""
    from channels.layers import get_channel_layer

    await _store(tenant_id, entry)
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(
            tenant_group(tenant_id),
            {"type": PRESENCE_CHANGED, "entries": [entry.public()], "at": time.time()},
        )


_WITHDRAW_PBX = """
local v = redis.call('hget', KEYS[1], ARGV[1])
if v and cjson.decode(v)['u'] == 0 then return redis.call('hdel', KEYS[1], ARGV[1]) end
return 0
"""


async def withdraw_pbx(tenant_id: int, extension: str) -> None:
    """A PBX extension's lamp is no longer watched: offline, unless the entry is no longer
    the PBX's (the extension became a line of ours, whose entry stays)."""
    from channels.layers import get_channel_layer

    if not owners.enabled():
        entries = _memory.get(tenant_id, {})
        current = entries.get(extension)
        if current is None or current.user_id != 0:
            return
        del entries[extension]
    elif not await owners.client().eval(_WITHDRAW_PBX, 1, _key(tenant_id), extension):
        return
    layer = get_channel_layer()
    if layer is not None:
        gone = Entry(extension, OFFLINE, 0, time.time())
        await layer.group_send(
            tenant_group(tenant_id),
            {"type": PRESENCE_CHANGED, "entries": [gone.public()], "at": time.time()},
        )


async def oldest_ringing(tenant_id: int, user_ids: set[int]) -> Entry | None:
    """Group pickup: the member of `user_ids` whose line has rung the longest."""
    ringing = [e for e in await snapshot(tenant_id) if e.state == RINGING and e.user_id in user_ids]
    return min(ringing, key=lambda e: e.since, default=None)


def reset_memory() -> None:
    """Tests: forget the embedded store between tests."""
    _memory.clear()


def lamp_extensions(user) -> set[str]:
    """The extensions that get a lamp on this user's pages: the active SIP accounts of the
    user's own tenant (never another tenant's), but not the user's own, and the tenant's PBX
    extensions (`pbx_extensions`) whose dialogs a sipworker watches."""
    from portal.models import Profile, SipAccount

    tenant_id = Profile.objects.filter(user=user).values_list("tenant_id", flat=True).first()
    if tenant_id is None:
        return set()
    ours = set(
        SipAccount.objects.filter(tenant_id=tenant_id, is_active=True)
        .exclude(user=user)
        .values_list("extension", flat=True)
    )
    return ours | set(pbx_extensions(tenant_id))


# -- lamps for PBX extensions (RFC 4235 dialog event package, phone.worker.blf) ------------------

# An internal extension: 2 to 6 digits, not starting with 0 (the outside-line prefix and every
# Japanese outside number start with 0), and no three-digit 1xx (110, 119, 117...: special
# service numbers a phonebook may well hold).
INTERNAL_EXTENSION = re.compile(r"^(?!1\d\d$)[1-9]\d{1,5}$")
# At most this many watched extensions per tenant (one SUBSCRIBE dialog each at the PBX).
MAX_PBX_EXTENSIONS = 100


def pbx_extensions(tenant_id: int) -> list[str]:
    """The internal extensions the tenant's pages show (any phonebook of the tenant, shared or
    personal, and one-touch buttons) that are not the extension of an active SIP account of
    the tenant: the PBX tells their state (RFC 4235) instead of a line of ours. Sorted, at most
    MAX_PBX_EXTENSIONS (the lowest numbers win)."""
    from phone.models import Contact, LineButton
    from portal.models import SipAccount

    numbers = set(Contact.objects.filter(tenant_id=tenant_id).values_list("number", flat=True))
    numbers |= set(
        LineButton.objects.filter(tenant_id=tenant_id, kind=LineButton.Kind.ONE_TOUCH).values_list(
            "number", flat=True
        )
    )
    ours = set(
        SipAccount.objects.filter(tenant_id=tenant_id, is_active=True).values_list(
            "extension", flat=True
        )
    )
    internal = sorted(
        (n for n in numbers - ours if INTERNAL_EXTENSION.match(n)), key=lambda n: (len(n), n)
    )
    return internal[:MAX_PBX_EXTENSIONS]
