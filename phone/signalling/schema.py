"""Every message between the browser and the server over /ws/phone/, in one place (design.md §3).

Client messages are validated here before the consumer acts on them; server messages are built
through `server_message`, which checks them against the same catalogue, so the browser code and
the schema test read one list. Fields: name → (python type(s), required).
"""

import json
from dataclasses import dataclass

MAX_MESSAGE_BYTES = 64 * 1024  # SDP offers with many candidates stay well below this
_STR = (str,)
_INT = (int,)
_BOOL = (bool,)
_DICT = (dict,)
_LIST = (list,)
_ANY_SCALAR = (str, int, type(None))


def _f(types, required=True):
    return (types, required)


# client → server
CLIENT_MESSAGES: dict[str, dict[str, tuple]] = {
    "dial": {"number": _f(_STR), "line": _f(_STR, False)},
    "answer": {"call_id": _f(_STR, False)},
    "reject": {"call_id": _f(_STR, False)},
    "hangup": {"call_id": _f(_STR, False)},
    "hold": {},
    "unhold": {},
    "dtmf": {"digits": _f(_STR)},
    "transfer.start": {"number": _f(_STR)},
    "transfer.complete": {},
    "transfer.cancel": {},
    "transfer.blind": {"number": _f(_STR)},
    "webrtc.offer": {"sdp": _f(_STR)},
    "ping": {"id": _f(_ANY_SCALAR, False)},
}

# server → client
SERVER_MESSAGES: dict[str, dict[str, tuple]] = {
    # state: registering | registered | failed | unregistered; reason: e.g. "403 Forbidden"
    "registration": {"state": _f(_STR), "reason": _f(_STR), "extension": _f(_STR)},
    # state: dialing | ringing | incoming | incall | held | ended
    "call": {
        "id": _f(_STR),
        "state": _f(_STR),
        "direction": _f(_STR),  # out | in
        "remote": _f(_STR),
        "remote_name": _f(_STR),
        "called": _f(_STR),
        "held": _f(_BOOL),
        "reason": _f(_STR),
        "answered_at": _f((str, type(None))),
        "transfer": _f((dict, type(None))),
    },
    # Sent to the one tab that should ring (the most recently opened, seed 1-4).
    "incoming": {
        "id": _f(_STR),
        "remote": _f(_STR),
        "remote_name": _f(_STR),
        "called": _f(_STR),
    },
    "calls": {"calls": _f(_LIST)},  # every call of the user, on (re)attach
    "webrtc.answer": {"sdp": _f(_STR)},
    "park.slots": {"slots": _f(_LIST)},
    "cti.popup": {"number": _f(_STR), "called": _f(_STR), "call_id": _f(_STR), "phase": _f(_STR)},
    "dial.request": {"number": _f(_STR), "source": _f(_STR)},
    "settings.changed": {"what": _f(_STR)},
    "vm.status": {"waiting": _f(_BOOL), "new": _f(_INT), "old": _f(_INT)},
    "pong": {"id": _f(_ANY_SCALAR)},
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
    for name, (types, required) in fields.items():
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
    unknown = set(data) - set(fields) - {"type"}
    if unknown:
        raise SchemaError("bad_field", f"{kind}: unknown field(s) {sorted(unknown)}", kind)


def parse_client_message(text: str | bytes | None) -> ClientMessage:
    if text is None:
        raise SchemaError("bad_json", ERROR_CODES["bad_json"])
    if len(text) > MAX_MESSAGE_BYTES:
        raise SchemaError("too_large", ERROR_CODES["too_large"])
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
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
