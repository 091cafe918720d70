"""application/dialog-info+xml (RFC 4235 §4) → a presence lamp.

The dialog event package tells a subscriber what the dialogs of one address of record are
doing. We keep, per subscription, the dialogs the notifier last described (`DialogInfoState`)
and reduce them to a lamp: ringing (a call rings there), busy (a call is being made or is up)
or idle (no dialog, or all of them terminated).

The body comes from the network: it is parsed by xml.etree (expat) only after cheap bounds —
at most MAX_BODY bytes, no DOCTYPE (so no entity declarations at all: no "billion laughs", no
external entities; RFC 4235 bodies never need one) — and at most MAX_DIALOGS dialog elements.
defusedxml would do the same and is not a dependency; refusing DOCTYPE outright is simpler.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from .errors import SipParseError

NS = "{urn:ietf:params:xml:ns:dialog-info}"
MAX_BODY = 64 * 1024
MAX_DIALOGS = 64

IDLE, RINGING, BUSY = "idle", "ringing", "busy"

# RFC 4235 §3.7.1: the dialog state machine.
DIALOG_STATES = ("trying", "proceeding", "early", "confirmed", "terminated")


class DialogInfoError(SipParseError):
    """The body is not a dialog-info document we accept."""


class DialogInfoTooLarge(DialogInfoError):
    """Well-formed or not, the body is past our bounds (size or number of dialogs)."""


@dataclass(frozen=True, slots=True)
class DialogEntry:
    id: str
    state: str
    direction: str | None  # initiator | recipient | None


@dataclass(frozen=True, slots=True)
class DialogInfo:
    version: int
    full: bool
    entity: str
    dialogs: tuple[DialogEntry, ...]


def parse_dialog_info(body: bytes) -> DialogInfo:
    """Parse a dialog-info document (RFC 4235 §4.1) within our bounds."""
    if len(body) > MAX_BODY:
        raise DialogInfoTooLarge(f"dialog-info body of {len(body)} bytes")
    if b"<!" in body.replace(b"<![CDATA[", b""):
        # DOCTYPE / ENTITY declarations (comments too: nothing legitimate needs them here).
        raise DialogInfoError("declarations are not accepted in dialog-info")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise DialogInfoError(f"not well-formed: {exc}") from None
    if root.tag != f"{NS}dialog-info":
        raise DialogInfoError(f"root element {root.tag!r} is not dialog-info")
    try:
        version = int(root.get("version", ""))
    except ValueError:
        raise DialogInfoError("dialog-info without a numeric version") from None
    kind = root.get("state")
    if kind not in ("full", "partial"):
        raise DialogInfoError(f"dialog-info state {kind!r}")
    elements = root.findall(f"{NS}dialog")
    if len(elements) > MAX_DIALOGS:
        raise DialogInfoTooLarge(f"{len(elements)} dialogs")
    dialogs = []
    for element in elements:
        ident = element.get("id")
        state_el = element.find(f"{NS}state")
        state = (state_el.text or "").strip().lower() if state_el is not None else ""
        if not ident or state not in DIALOG_STATES:
            raise DialogInfoError(f"dialog {ident!r} with state {state!r}")
        direction = element.get("direction")
        if direction not in (None, "initiator", "recipient"):
            raise DialogInfoError(f"dialog direction {direction!r}")
        dialogs.append(DialogEntry(ident, state, direction))
    return DialogInfo(version, kind == "full", root.get("entity", ""), tuple(dialogs))


def lamp(dialogs: dict[str, DialogEntry] | tuple[DialogEntry, ...]) -> str:
    """Ringing over busy (a colleague may still take a ringing call, 代理応答), else idle."""
    entries = dialogs.values() if isinstance(dialogs, dict) else dialogs
    state = IDLE
    for entry in entries:
        if entry.state == "terminated":
            continue
        if entry.state != "confirmed" and entry.direction == "recipient":
            return RINGING  # trying / proceeding / early towards the watched party
        state = BUSY  # confirmed, or a call it makes (or one we cannot tell)
    return state


@dataclass(slots=True)
class DialogInfoState:
    """What one subscription knows of the watched party's dialogs (RFC 4235 §4.1.2)."""

    version: int | None = None
    dialogs: dict[str, DialogEntry] = field(default_factory=dict)

    def apply(self, info: DialogInfo) -> bool:
        """Take a document in; False if it is stale (a version we already saw) or a partial
        one before any full state, which changes nothing."""
        if self.version is not None and info.version <= self.version:
            return False
        if not info.full and self.version is None:
            return False
        if info.full:
            self.dialogs = {}
        for entry in info.dialogs:
            if entry.state == "terminated":
                self.dialogs.pop(entry.id, None)
            else:
                self.dialogs[entry.id] = entry
        self.version = info.version
        return True

    def reset(self) -> None:
        """A new subscription starts its versions over (§4.1)."""
        self.version = None
        self.dialogs = {}

    @property
    def lamp(self) -> str:
        return lamp(self.dialogs)
