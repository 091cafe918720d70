"""application/dialog-info+xml (RFC 4235 §4) into a lamp, within bounds."""

from __future__ import annotations

import pytest

from phone.sip.dialoginfo import (
    BUSY,
    IDLE,
    MAX_BODY,
    MAX_DIALOGS,
    RINGING,
    DialogInfoError,
    DialogInfoState,
    DialogInfoTooLarge,
    lamp,
    parse_dialog_info,
)


def doc(version: int, state: str, *dialogs: str, entity: str = "sip:1009@pbx") -> bytes:
    body = "".join(dialogs)
    return (
        '<?xml version="1.0"?>\n'
        '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
        f'version="{version}" state="{state}" entity="{entity}">{body}</dialog-info>'
    ).encode()


def dialog(ident: str, state: str, direction: str | None = "recipient") -> str:
    attr = f' direction="{direction}"' if direction else ""
    return f'<dialog id="{ident}" call-id="c{ident}"{attr}><state>{state}</state></dialog>'


def test_it_parses_the_rfc_4235_example() -> None:
    # RFC 4235 §4.2 (abridged): a confirmed dialog the watched party initiated.
    body = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"
             version="1" state="full" entity="sip:alice@example.com">
  <dialog id="as7d900as8" call-id="a84b4c76e66710" local-tag="1928301774"
          remote-tag="456887766" direction="initiator">
    <state>confirmed</state>
    <duration>274</duration>
    <local><identity display="Alice">sip:alice@example.com</identity></local>
  </dialog>
</dialog-info>"""
    info = parse_dialog_info(body)
    assert (info.version, info.full, info.entity) == (1, True, "sip:alice@example.com")
    (entry,) = info.dialogs
    assert (entry.id, entry.state, entry.direction) == ("as7d900as8", "confirmed", "initiator")
    assert lamp(info.dialogs) == BUSY


@pytest.mark.parametrize(
    ("dialogs", "expected"),
    [
        ((), IDLE),
        ((dialog("1", "terminated"),), IDLE),
        ((dialog("1", "early"),), RINGING),
        ((dialog("1", "proceeding"),), RINGING),
        ((dialog("1", "early", "initiator"),), BUSY),
        ((dialog("1", "trying", "initiator"),), BUSY),
        ((dialog("1", "confirmed"),), BUSY),
        ((dialog("1", "early", None),), BUSY),
        # Ringing over busy: a second call rings while one is up (代理応答 may take it).
        ((dialog("1", "confirmed"), dialog("2", "early")), RINGING),
    ],
)
def test_it_reduces_dialogs_to_a_lamp(dialogs: tuple[str, ...], expected: str) -> None:
    assert lamp(parse_dialog_info(doc(1, "full", *dialogs)).dialogs) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"<dialog-info",
        b"not xml at all",
        b'<other xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full"/>',
        b'<dialog-info version="1" state="full"/>',  # no namespace
        doc(1, "sometimes"),
        b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" state="full"/>',
        doc(1, "full", dialog("1", "ringing")),
        doc(1, "full", dialog("1", "early", "sideways")),
        doc(1, "full", '<dialog direction="recipient"><state>early</state></dialog>'),
    ],
)
def test_it_refuses_malformed_documents(body: bytes) -> None:
    with pytest.raises(DialogInfoError):
        parse_dialog_info(body)


def test_it_refuses_entity_declarations() -> None:
    # "Billion laughs" and external entities: no DOCTYPE is ever needed by RFC 4235.
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" '
        b'entity="&b;"/>'
    )
    external = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" '
        b'entity="&x;"/>'
    )
    for body in (laughs, external):
        with pytest.raises(DialogInfoError):
            parse_dialog_info(body)


def test_it_bounds_size_and_dialogs() -> None:
    with pytest.raises(DialogInfoTooLarge):
        parse_dialog_info(doc(1, "full", " " * MAX_BODY))
    many = [dialog(str(i), "confirmed") for i in range(MAX_DIALOGS + 1)]
    with pytest.raises(DialogInfoTooLarge):
        parse_dialog_info(doc(1, "full", *many))
    assert len(parse_dialog_info(doc(1, "full", *many[:MAX_DIALOGS])).dialogs) == MAX_DIALOGS


def test_it_applies_full_and_partial_state_by_version() -> None:
    state = DialogInfoState()
    # A partial document before any full one tells us nothing we can use.
    assert not state.apply(parse_dialog_info(doc(0, "partial", dialog("1", "early"))))
    assert state.apply(parse_dialog_info(doc(1, "full", dialog("1", "early"))))
    assert state.lamp == RINGING
    assert state.apply(parse_dialog_info(doc(2, "partial", dialog("1", "confirmed"))))
    assert state.lamp == BUSY
    # A stale (or repeated) version changes nothing (RFC 4235 §4.1.2).
    assert not state.apply(parse_dialog_info(doc(2, "partial", dialog("1", "terminated"))))
    assert state.lamp == BUSY
    assert state.apply(parse_dialog_info(doc(3, "partial", dialog("1", "terminated"))))
    assert state.lamp == IDLE and state.dialogs == {}
    # A full document replaces everything.
    state.apply(parse_dialog_info(doc(4, "partial", dialog("2", "confirmed"))))
    state.apply(parse_dialog_info(doc(5, "full")))
    assert state.lamp == IDLE
    state.reset()
    assert state.apply(parse_dialog_info(doc(0, "full", dialog("3", "early", "initiator"))))
    assert state.lamp == BUSY
