"""Every message between the consumers (web processes) and the sipworker host, typed, in one
place (design.md §2-§3). Consumers, events and actions import only this module from the worker
side, so a web process never loads the SIP or media stack.

    consumer → host   channel WORKER_CHANNEL
        Attach   a phone page opened (or re-attaches after the worker came back)
        Detach   it went away, however it died
        Command  a validated browser command (one of the dataclasses below), naming its call
        Reload   the user's SIP account changed
    host → consumer   the session's channel, or the WORKERS_GROUP for heartbeats
        ToPage     a server message of phone.signalling.schema for that page
        Heartbeat  the worker is alive (every HEARTBEAT_SECONDS); a new `boot` means it restarted

On the wire (the channel layer carries msgpack-able dicts) each message is a dict with a
"type"; `to_wire` and `from_wire` are the only translators. Browser commands keep the
schema's type names ("dial", "transfer.start", ...) and fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

WORKER_CHANNEL = "sipworker"
# Every phone consumer listens here for the workers' heartbeats.
WORKERS_GROUP = "sipworkers"
HEARTBEAT_SECONDS = 1.0
# A page is told its phone service is gone after this long without a heartbeat (issue: ≤ 5 s).
WORKER_LOST_SECONDS = 3.5


class ProtocolError(ValueError):
    """A wire message that is not one of ours (a bug or a foreign sender): dropped and logged."""


# -- browser commands (what the page asked for; validated by phone.signalling.schema first) --


@dataclass(frozen=True, slots=True)
class Dial:
    number: str
    line: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    call_id: str


@dataclass(frozen=True, slots=True)
class Reject:
    call_id: str


@dataclass(frozen=True, slots=True)
class Hangup:
    call_id: str


@dataclass(frozen=True, slots=True)
class Hold:
    call_id: str


@dataclass(frozen=True, slots=True)
class Unhold:
    call_id: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    call_id: str
    digits: str


@dataclass(frozen=True, slots=True)
class TransferStart:
    """Attended transfer, step 1: call `number` while `call_id` is held (seed 3-3)."""

    call_id: str
    number: str


@dataclass(frozen=True, slots=True)
class TransferComplete:
    """転送実行: hand the held call over to the consultation call `call_id` is held for."""

    call_id: str


@dataclass(frozen=True, slots=True)
class TransferCancel:
    call_id: str


@dataclass(frozen=True, slots=True)
class TransferBlind:
    call_id: str
    number: str


@dataclass(frozen=True, slots=True)
class Swap:
    """Resume `call_id` (held) and hold the call that is up (call waiting)."""

    call_id: str


@dataclass(frozen=True, slots=True)
class Park:
    call_id: str
    slot: int


@dataclass(frozen=True, slots=True)
class ParkPickup:
    slot: int


@dataclass(frozen=True, slots=True)
class WebrtcOffer:
    sdp: str


@dataclass(frozen=True, slots=True)
class LineTestStart:
    """回線テスト: play the page's own audio back to it (issue 13, item 4)."""


@dataclass(frozen=True, slots=True)
class LineTestStop:
    pass


@dataclass(frozen=True, slots=True)
class QualityStats:
    """The page's WebRTC stats of a call: loss 0..1, jitter and rtt in ms."""

    call_id: str
    loss: float
    jitter: float
    rtt: float | None = None


@dataclass(frozen=True, slots=True)
class SetDnd:
    """応答不可 on or off (stored for the user; calls meanwhile get 486 without ringing)."""

    on: bool


@dataclass(frozen=True, slots=True)
class PickupRinging:
    """代理応答: take the call ringing at a colleague's `extension` (or, for an extension not on
    the portal, dial the tenant's PBX pickup feature code)."""

    extension: str


@dataclass(frozen=True, slots=True)
class PickupGroup:
    """グループ代理応答: take the oldest call ringing in the user's pickup group."""


BrowserCommand = (
    Dial
    | Answer
    | Reject
    | Hangup
    | Hold
    | Unhold
    | Dtmf
    | TransferStart
    | TransferComplete
    | TransferCancel
    | TransferBlind
    | Swap
    | Park
    | ParkPickup
    | WebrtcOffer
    | LineTestStart
    | LineTestStop
    | QualityStats
    | SetDnd
    | PickupRinging
    | PickupGroup
)

# schema type name → command class (the schema test checks both name the same fields)
COMMANDS: dict[str, type[BrowserCommand]] = {
    "dial": Dial,
    "answer": Answer,
    "reject": Reject,
    "hangup": Hangup,
    "hold": Hold,
    "unhold": Unhold,
    "dtmf": Dtmf,
    "transfer.start": TransferStart,
    "transfer.complete": TransferComplete,
    "transfer.cancel": TransferCancel,
    "transfer.blind": TransferBlind,
    "swap": Swap,
    "park": Park,
    "park.pickup": ParkPickup,
    "webrtc.offer": WebrtcOffer,
    "linetest.start": LineTestStart,
    "linetest.stop": LineTestStop,
    "quality.stats": QualityStats,
    "dnd": SetDnd,
    "pickup": PickupRinging,
    "pickup.group": PickupGroup,
}
_COMMAND_NAMES = {cls: name for name, cls in COMMANDS.items()}


def command_name(command: BrowserCommand) -> str:
    return _COMMAND_NAMES[type(command)]


def make_command(kind: str, data: dict[str, Any]) -> BrowserCommand:
    cls = COMMANDS.get(kind)
    if cls is None:
        raise ProtocolError(f"not a worker command: {kind!r}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ProtocolError(f"{kind}: {exc}") from None


# -- consumer → host ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attach:
    user_id: int
    session: str
    opened_at: float


@dataclass(frozen=True, slots=True)
class Detach:
    user_id: int
    session: str


@dataclass(frozen=True, slots=True)
class Command:
    user_id: int
    session: str
    command: BrowserCommand


@dataclass(frozen=True, slots=True)
class Reload:
    user_id: int


@dataclass(frozen=True, slots=True)
class Handover:
    """Worker → worker: a member of a park group takes a call another member's line holds in
    a slot (seed 3-4). The owner's line (`user_id`) calls `to_extension` through the PBX with
    `token`; the picker's line answers that call at once and its page hears the caller. Sent
    on the worker channel, so the two lines may run in different sipworker processes.

    Slot 0 (代理応答, issue 13): not a parked call but the oldest call ringing at `user_id`'s
    line; that line answers it, then calls the picker the same way."""

    user_id: int  # the line holding the parked (or ringing) call
    call_id: str
    slot: int
    to_extension: str
    to_session: str  # the picker's page, told if the call is no longer there
    token: str


ToWorker = Attach | Detach | Command | Reload | Handover


# -- host → consumer ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToPage:
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    worker: str  # the worker process's id for this boot (changes on every start)


FromWorker = ToPage | Heartbeat

# Channel-layer "type" of each message; the consumer's handler is the type with . → _
_TYPES: dict[type[Any], str] = {
    Attach: "worker.attach",
    Detach: "worker.detach",
    Command: "worker.command",
    Reload: "worker.reload",
    Handover: "worker.handover",
    ToPage: "phone.message",
    Heartbeat: "worker.heartbeat",
}
_CLASSES = {name: cls for cls, name in _TYPES.items()}


_ATOMS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """What dataclasses.asdict() makes of a field's value - nested dataclasses as dicts, every
    container a new one - by the exact type first: a page message is dicts, lists and scalars,
    and asdict's generic walk (isinstance checks, copy.deepcopy of every leaf) was most of the
    cost of sending one (the per-call quality reports: ~2 % of a sipworker at 100 calls)."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return kind(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return dataclasses.asdict(_Box(value))["value"]  # anything else: asdict's own rules


@dataclass(slots=True)
class _Box:
    value: Any


def to_wire(message: ToWorker | FromWorker) -> dict[str, Any]:
    if isinstance(message, Command):
        return {
            "type": _TYPES[Command],
            "user_id": message.user_id,
            "session": message.session,
            "command": command_name(message.command),
            "data": _plain(message.command),
        }
    return {"type": _TYPES[type(message)], **_plain(message)}


def from_wire(wire: dict[str, Any]) -> ToWorker | FromWorker:
    kind = wire.get("type")
    cls = _CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown worker message type {kind!r}")
    fields = {k: v for k, v in wire.items() if k != "type"}
    if cls is Command:
        data = fields.get("data")
        if not isinstance(data, dict) or not isinstance(fields.get("command"), str):
            raise ProtocolError("worker.command without command/data")
        fields["command"] = make_command(fields["command"], data)
        fields.pop("data")
    try:
        message: ToWorker | FromWorker = cls(**fields)
    except TypeError as exc:
        raise ProtocolError(f"{kind}: {exc}") from None
    return message
