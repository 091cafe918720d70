"""Every message between the browser and the server over /ws/phone/, in one place (design.md §3).

Client messages are validated here before the consumer acts on them; server messages are built
through `server_message`, which checks them against the same catalogue, so the browser code and
the schema test read one list. Fields: name → (python type(s), required).
"""

import json
from dataclasses import dataclass

MAX_MESSAGE_BYTES = 64 * 1024  # SDP offers with many candidates stay well below this
# Bounds of every text field a page sends (issue: every input has a bound and a clear error).
MAX_NUMBER = 32  # E.164 is at most 15 digits; feature codes and prefixes add a few
MAX_CALL_ID = 255  # the history column's size; our own Call-IDs are ~35 characters
MAX_TOKEN = 64
_STR = (str,)
_INT = (int,)
_BOOL = (bool,)
_DICT = (dict,)
_LIST = (list,)
_ANY_SCALAR = (str, int, type(None))
_NUM = (int, float)


def _f(types, required=True, max_length=None):
    return (types, required, max_length)


def _call(**fields):
    """A command that acts on one call: it always names it (never "the current call")."""
    return {"call_id": _f(_STR, max_length=MAX_CALL_ID), **fields}


# client → server
CLIENT_MESSAGES: dict[str, dict[str, tuple]] = {
    "dial": {"number": _f(_STR, max_length=MAX_NUMBER), "line": _f(_STR, False, MAX_NUMBER)},
    "answer": _call(),
    "reject": _call(),
    "hangup": _call(),
    "hold": _call(),
    "unhold": _call(),
    "dtmf": _call(digits=_f(_STR, max_length=MAX_NUMBER)),
    "transfer.start": _call(number=_f(_STR, max_length=MAX_NUMBER)),  # call_id: the held call
    "transfer.complete": _call(),  # call_id: the consultation call (its transfer.of is held)
    "transfer.cancel": _call(),  # call_id: the consultation call
    "transfer.blind": _call(number=_f(_STR, max_length=MAX_NUMBER)),
    # Several calls (call waiting): resume call_id, holding whichever call is up.
    "swap": _call(),
    # Park (seed 3-4): the call goes to a slot of the user's park group; any member takes it.
    "park": _call(slot=_f(_INT)),
    "park.pickup": {"slot": _f(_INT)},
    "webrtc.offer": {"sdp": _f(_STR)},
    # 回線テスト (issue 13, item 4): the worker plays the page's own audio back to it, ~1 s late,
    # over the page's peer connection, for at most LINE_TEST_SECONDS; refused during a call.
    "linetest.start": {},
    "linetest.stop": {},
    # The page's WebRTC stats of a call (getStats), at most one a second per call (the worker
    # drops more): loss 0..1, jitter and rtt in ms; values are clamped by phone.quality.
    "quality.stats": _call(loss=_f(_NUM), jitter=_f(_NUM), rtt=_f((int, float, type(None)), False)),
    # 応答不可 (issue 13): on → incoming calls are refused with 486, colleagues see "dnd".
    "dnd": {"on": _f(_BOOL)},
    # 代理応答: take the call ringing at a colleague's extension of the same tenant.
    "pickup": {"extension": _f(_STR, max_length=MAX_NUMBER)},
    # グループ代理応答: the oldest call ringing in the user's pickup (= park) group.
    "pickup.group": {},
    "ping": {"id": _f(_ANY_SCALAR, False, MAX_TOKEN)},
}

# server → client
SERVER_MESSAGES: dict[str, dict[str, tuple]] = {
    # state: registering | registered | failed | unregistered; reason: e.g. "403 Forbidden"
    "registration": {"state": _f(_STR), "reason": _f(_STR), "extension": _f(_STR)},
    # The phone service itself (the sipworker): "lost" when its heartbeat stops, "ok" when it
    # is back; the page shows the lamp red with the reason meanwhile.
    "worker": {"state": _f(_STR), "reason": _f(_STR)},
    # state: dialing | ringing | incoming | incall | held | ended
    "call": {
        "id": _f(_STR),
        "state": _f(_STR),
        "direction": _f(_STR),  # out | in
        "remote": _f(_STR),
        # The numbers as people read them (03-1234-5678; phone.numbers.display_number): the
        # page shows these, `remote`/`called` stay as dialled (for redial, CTI, history). The
        # worker always sends them; a page falls back to the digits without them.
        "remote_display": _f(_STR, False),
        "remote_name": _f(_STR),
        "called": _f(_STR),
        "called_display": _f(_STR, False),
        "held": _f(_BOOL),
        # "hold" | "unhold" while that re-INVITE awaits its answer; state changes only on 2xx
        "pending": _f((str, type(None))),
        "reason": _f(_STR),
        "answered_at": _f((str, type(None))),
        "transfer": _f((dict, type(None))),
        # The line button (seed 6-1) the call came in on or went out with ("" for none) and
        # its ring tone ("1"-"4") for the page's ringer.
        "line": _f(_STR),
        "ring": _f(_STR),
        "park": _f((int, type(None))),  # the slot while the call is parked
    },
    # Sent to the one tab that should ring (the most recently opened, seed 1-4).
    "incoming": {
        "id": _f(_STR),
        "remote": _f(_STR),
        "remote_display": _f(_STR, False),
        "remote_name": _f(_STR),
        "called": _f(_STR),
        "called_display": _f(_STR, False),
    },
    "calls": {"calls": _f(_LIST)},  # every call of the user, on (re)attach
    "webrtc.answer": {"sdp": _f(_STR)},
    # Every slot of the user's park group: [{slot, state: free|parked|mine, parked_by, caller,
    # caller_name}] — on connect and whenever one changes (≤ 200 ms to every member).
    "park.slots": {"slots": _f(_LIST)},
    # Something the user should read for a few seconds (seed 3-2): a failed call (level
    # "error", code busy | no-answer | not-found | unavailable | declined | failed ...) or
    # information ("info"). The page shows its own translation of `code`, else `text`.
    "notice": {"level": _f(_STR), "code": _f(_STR), "text": _f(_STR)},
    "cti.popup": {"number": _f(_STR), "called": _f(_STR), "call_id": _f(_STR), "phase": _f(_STR)},
    "dial.request": {"number": _f(_STR), "source": _f(_STR)},
    "settings.changed": {"what": _f(_STR)},
    "vm.status": {"waiting": _f(_BOOL), "new": _f(_INT), "old": _f(_INT)},
    # 回線テスト progress and result: state running | done; result "" while running, then
    # ok | silent (nothing above the noise floor) | no_media (no packets from the page) |
    # stopped | incoming (a call came in); level 0-100 (the loudest 20 ms heard so far),
    # dbfs its level in dB of full scale, packets the RTP packets the worker got.
    "linetest": {
        "state": _f(_STR),
        "result": _f(_STR),
        "level": _f(_INT),
        "dbfs": _f(_NUM),
        "packets": _f(_INT),
        "delay_ms": _f(_INT),
    },
    # A call's quality now (issue 13, item 5), every few seconds while it is up: state good |
    # fair | poor; mos 1-4.5 (phone.quality); loss in %, jitter and rtt in ms.
    "quality": {
        "call_id": _f(_STR),
        "state": _f(_STR),
        "mos": _f(_NUM),
        "loss": _f(_NUM),
        "jitter": _f(_NUM),
        "rtt": _f((int, float, type(None))),
    },
    "pong": {"id": _f(_ANY_SCALAR)},
    # The user's 応答不可 state, on attach and whenever it changes (any of their pages).
    "dnd": {"on": _f(_BOOL)},
    # Colleague lamps (BLF): [{extension, state: idle|ringing|busy|dnd|offline}] of lines of
    # the user's own tenant only. full=true: the snapshot on connect (extensions not listed
    # are offline); false: the lines that changed.
    "presence": {"entries": _f(_LIST), "full": _f(_BOOL)},
    "error": {"code": _f(_STR), "message": _f(_STR), "request": _f((str, type(None)))},
}

ERROR_CODES = {
    "bad_json": "the message is not a JSON object",
    "too_large": "the message is too large",
    "unknown_type": "unknown message type",
    "bad_field": "a field is missing or has the wrong type",
    "not_allowed": "not allowed",
    "no_account": "no SIP account is configured",
    "no_call": "there is no such call",
    "bad_state": "the call is not in a state that allows this",
    "bad_number": "the number cannot be dialled",
    "no_slot": "no such park slot",
    "slot_busy": "the park slot is taken",
    "worker_unavailable": "the phone service is not reachable; try again",
    "hold_refused": "the other party refused the hold",
    "too_long": "a field is too long",
    "in_call": "a call is in progress; the line test can run when it has ended",
    "internal": "the server could not handle this message; the call goes on",
}


class SchemaError(ValueError):
    def __init__(self, code: str, message: str, request: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request = request


@dataclass(frozen=True)
class ClientMessage:
    type: str
    data: dict


def _check(catalogue: dict, kind: str, data: dict) -> None:
    fields = catalogue[kind]
    for name, (types, required, max_length) in fields.items():
        if name not in data:
            if required:
                raise SchemaError("bad_field", f"{kind}: '{name}' is required", kind)
            continue
        value = data[name]
        # bool is an int in Python; a slot of `true` is still a wrong type.
        if isinstance(value, bool) and bool not in types:
            raise SchemaError("bad_field", f"{kind}: '{name}' has the wrong type", kind)
        if not isinstance(value, types):
            raise SchemaError("bad_field", f"{kind}: '{name}' has the wrong type", kind)
        if max_length is not None and isinstance(value, str) and len(value) > max_length:
            raise SchemaError(
                "too_long", f"{kind}: '{name}' is longer than {max_length} characters", kind
            )
    unknown = set(data) - set(fields) - {"type"}
    if unknown:
        names = ", ".join(repr(name[:40]) for name in sorted(unknown)[:5])
        raise SchemaError("bad_field", f"{kind}: unknown field(s) {names}", kind)


def parse_client_message(text: str | bytes | None) -> ClientMessage:
    if text is None:
        raise SchemaError("bad_json", ERROR_CODES["bad_json"])
    if len(text) > MAX_MESSAGE_BYTES:
        raise SchemaError("too_large", ERROR_CODES["too_large"])
    try:
        # Binary frames must be UTF-8 (RFC 8259 §8.1); text frames already are.
        data = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
        # "\ud800" escapes decode to lone surrogates that no reply could ever echo (UTF-8
        # cannot encode them): refuse them here, once, for every field and name.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        # RecursionError: 20 000 nested brackets fit in 64 KB and exhaust the parser's stack.
        raise SchemaError("bad_json", ERROR_CODES["bad_json"]) from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise SchemaError("bad_json", ERROR_CODES["bad_json"])
    kind = data["type"]
    if kind not in CLIENT_MESSAGES:
        raise SchemaError("unknown_type", f"unknown message type {kind[:40]!r}", kind[:40])
    _check(CLIENT_MESSAGES, kind, data)
    return ClientMessage(kind, {k: v for k, v in data.items() if k != "type"})


def server_message(kind: str, **fields) -> dict:
    """A server → browser message, checked against the catalogue (a bug here is ours)."""
    if kind not in SERVER_MESSAGES:
        raise KeyError(f"undocumented server message type {kind!r}")
    _check(SERVER_MESSAGES, kind, fields)
    return {"type": kind, **fields}


def error_message(code: str, message: str | None = None, request: str | None = None) -> dict:
    return server_message(
        "error", code=code, message=message or ERROR_CODES.get(code, code), request=request
    )
