"""The dev/test PBX (deploy/kamailio/kamailio.cfg) and the harness around it, for real.

Kamailio is the registrar/proxy; SIPp and baresip are the far ends; audio is proven by
tone frequency in what baresip recorded. Everything on 127.0.0.1, ports chosen at runtime.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.baresip import BaresipError
from tests.support.tones import active_seconds, dominant_frequency

pytestmark = pytest.mark.integration

TOLERANCE_HZ = 20


def assert_tone(wav, freq: float, *, min_seconds: float = 1.0) -> None:
    found = dominant_frequency(wav)
    assert found is not None, f"{wav} is silent"
    assert abs(found - freq) <= TOLERANCE_HZ, f"{wav}: {found:.1f} Hz, expected {freq} Hz"
    assert active_seconds(wav) >= min_seconds, f"{wav}: only {active_seconds(wav):.2f}s of audio"


def test_it_answers_options_to_itself(kamailio):
    assert kamailio.running
    assert kamailio.options() == 200
    # The same OPTIONS addressed to a user is a request to route: it needs auth.
    assert kamailio.options(uri=f"sip:1001@{kamailio.domain}") == 407


def test_it_registers_with_digest_auth(kamailio, make_sipp):
    sipp = make_sipp(
        "register.xml",
        kamailio.hostport,
        service="1004",
        auth=("1004", "pw1004"),
        keys={"domain": kamailio.domain, "expires": "120"},
    )
    res = sipp.run()
    assert res.ok, res.stderr[-2000:]
    assert res.responses == [401, 200]
    assert res.successful_calls == 1

    contacts = kamailio.registered("1004")
    assert [c.uri for c in contacts] == [f"sip:1004@127.0.0.1:{sipp.port};transport=UDP"]
    assert 0 < contacts[0].expires <= 120
    assert "1004" in [r.aor for r in kamailio.registrations()]


def test_it_rejects_a_wrong_password(kamailio, make_sipp):
    res = make_sipp(
        "register.xml",
        kamailio.hostport,
        service="2001",
        auth=("2001", "not-the-password"),
        keys={"domain": kamailio.domain},
        timeout=5,
    ).run()
    assert not res.ok
    assert res.responses[0] == 401
    assert set(res.responses[1:]) == {403}
    assert res.failed_calls == 1
    assert kamailio.registered("2001") == []


def test_it_rejects_an_unknown_user_and_accepts_one_added_at_runtime(kamailio, make_sipp):
    def register():
        return make_sipp(
            "register.xml",
            kamailio.hostport,
            service="1011",
            auth=("1011", "pw1011"),
            keys={"domain": kamailio.domain},
            timeout=5,
        ).run()

    refused = register()
    assert not refused.ok
    assert refused.responses[:2] == [401, 403]

    kamailio.add_user("1011", "pw1011")
    accepted = register()
    assert accepted.ok, accepted.stderr[-2000:]
    assert accepted.responses == [401, 200]
    assert len(kamailio.registered("1011")) == 1


def test_it_refuses_a_baresip_with_a_wrong_password(kamailio, make_baresip):
    with pytest.raises(BaresipError, match="403"):
        make_baresip("1003", "wrong-password")
    assert kamailio.registered("1003") == []


def test_it_carries_audio_both_ways_between_two_baresips(kamailio, make_baresip):
    alice = make_baresip("1001", tone_hz=1000)
    bob = make_baresip("1002", tone_hz=700)
    assert kamailio.registered("1001") and kamailio.registered("1002")

    alice.dial(kamailio.aor("1002"))
    incoming = bob.wait_event("CALL_INCOMING")
    assert incoming["peeruri"] == kamailio.aor("1001")
    bob.accept()
    alice.wait_event("CALL_ESTABLISHED")
    bob.wait_event("CALL_ESTABLISHED")

    time.sleep(3)
    alice.hangup()
    alice.wait_event("CALL_CLOSED")
    bob.wait_event("CALL_CLOSED")

    # sndfile finishes its WAVs when the call closes.
    [heard_by_alice] = alice.received_wavs()
    [heard_by_bob] = bob.received_wavs()
    assert_tone(heard_by_alice, 700, min_seconds=2)
    assert_tone(heard_by_bob, 1000, min_seconds=2)


def test_it_relays_cancel_before_the_call_is_answered(kamailio, make_baresip):
    alice = make_baresip("1001")
    bob = make_baresip("1002")
    alice.dial("1002")
    bob.wait_event("CALL_INCOMING")
    alice.wait_event("CALL_RINGING")
    alice.hangup()  # CANCEL, matched to the INVITE transaction by the proxy
    bob.wait_event("CALL_CLOSED")
    alice.wait_event("CALL_CLOSED")
    assert "CALL_ESTABLISHED" not in bob.event_types()


def test_it_answers_404_for_an_extension_that_is_not_registered(kamailio, make_baresip):
    alice = make_baresip("1001")
    alice.dial(kamailio.aor("1099"))
    closed = alice.wait_event("CALL_CLOSED")
    assert "404" in closed.get("param", "")


def test_it_relays_hold_resume_and_dtmf(kamailio, make_baresip):
    alice = make_baresip("1001", tone_hz=1000)
    bob = make_baresip("1002", tone_hz=700, auto_answer=True)
    alice.dial("1002")
    alice.wait_event("CALL_ESTABLISHED")
    bob.wait_event("CALL_ESTABLISHED")

    alice.send_dtmf("15#")
    digits = [bob.wait_event("CALL_DTMF_START")["param"] for _ in range(3)]
    assert digits == ["1", "5", "#"]

    # hold/resume are re-INVITEs through the proxy (loose_route on the record-route).
    alice.hold()
    bob.wait_event("CALL_REMOTE_SDP", param="offer")
    alice.resume()
    bob.wait_event("CALL_REMOTE_SDP", param="offer")

    bob.hangup()
    alice.wait_event("CALL_CLOSED")


def test_it_supports_a_blind_transfer(kamailio, make_baresip):
    alice = make_baresip("1001", tone_hz=1000)
    bob = make_baresip("1002", tone_hz=700, auto_answer=True)
    carol = make_baresip("1003", tone_hz=400, auto_answer=True)

    alice.dial("1002")
    alice.wait_event("CALL_ESTABLISHED")
    bob.wait_event("CALL_ESTABLISHED")

    # Bob sends REFER (in-dialog, via the proxy); alice calls carol herself.
    bob.transfer("1003")
    assert alice.wait_event("TRANSFER")["param"] == kamailio.aor("1003")
    bob.wait_event("CALL_CLOSED")
    alice.wait_event("CALL_ESTABLISHED", peeruri=kamailio.aor("1003"))
    carol.wait_event("CALL_ESTABLISHED", peeruri=kamailio.aor("1001"))

    time.sleep(2)
    alice.hangup()
    carol.wait_event("CALL_CLOSED")

    [heard_by_carol] = carol.received_wavs()
    assert_tone(heard_by_carol, 1000, min_seconds=1)


def test_it_delivers_a_call_to_a_sipp_uas(kamailio, make_sipp, make_baresip):
    uas = make_sipp("uas_answer.xml", timeout=20).start()
    # Register 1004 with the UAS's address as its contact.
    reg = make_sipp(
        "register.xml",
        kamailio.hostport,
        service="1004",
        auth=("1004", "pw1004"),
        keys={"domain": kamailio.domain, "contact_port": str(uas.port)},
    ).run()
    assert reg.ok, reg.stderr[-2000:]

    alice = make_baresip("1001", tone_hz=1000)
    alice.dial("1004")
    alice.wait_event("CALL_ESTABLISHED")
    time.sleep(0.5)
    alice.hangup()
    alice.wait_event("CALL_CLOSED")

    res = uas.wait(timeout=10)
    assert res.ok, res.stderr[-2000:]
    assert res.requests[:1] == ["INVITE"]
    assert "BYE" in res.requests


async def test_it_waits_for_events_without_blocking_the_event_loop(kamailio, make_baresip):
    alice = make_baresip("1001")
    bob = make_baresip("1002")
    await kamailio.wait_registered_async("1002")
    alice.dial("1002")
    await bob.wait_event_async("CALL_INCOMING")
    # Only the event loop answers the call: a wait that blocked the loop would time out.
    asyncio.get_running_loop().call_later(0.2, bob.accept)
    await alice.wait_event_async("CALL_ESTABLISHED", timeout=5)
    bob.hangup()
    await alice.wait_event_async("CALL_CLOSED")
