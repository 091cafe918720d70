from __future__ import annotations

import pytest

from phone.sip.errors import SipParseError
from phone.sip.sdp import (
    PCMA,
    Codec,
    SdpNegotiationError,
    SdpParseError,
    answer_direction,
    build_offer,
    is_hold,
    media_changed,
    negotiate_answer,
    negotiated_media,
    parse_sdp,
)

# A typical PBX offer: G.722 first, PCMA, PCMU, telephone-event on PT 96, session-level c=.
PBX_OFFER = (
    "v=0\r\n"
    "o=pbx 1234 5678 IN IP4 203.0.113.5\r\n"
    "s=Asterisk\r\n"
    "c=IN IP4 203.0.113.5\r\n"
    "b=CT:384\r\n"
    "t=0 0\r\n"
    "m=audio 10000 RTP/AVP 9 8 0 96\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:96 telephone-event/8000\r\n"
    "a=fmtp:96 0-16\r\n"
    "a=ptime:20\r\n"
    "a=maxptime:150\r\n"
    "a=sendrecv\r\n"
    "m=video 0 RTP/AVP 31\r\n"
)


def test_it_parses_and_round_trips_sdp() -> None:
    sdp = parse_sdp(PBX_OFFER.encode())
    assert sdp.origin.session_id == "1234" and sdp.origin.version == 5678
    assert sdp.session_name == "Asterisk"
    assert sdp.connection is not None and sdp.connection.address == "203.0.113.5"
    audio = sdp.audio
    assert audio is not None
    assert [c.name for c in audio.codecs()] == ["G722", "PCMA", "PCMU", "telephone-event"]
    assert audio.codecs()[3].fmtp == "0-16"
    assert audio.ptime == 20
    assert sdp.direction_of(audio) == "sendrecv"
    assert str(parse_sdp(str(sdp))) == PBX_OFFER


def test_it_uses_static_payload_types_without_rtpmap() -> None:
    sdp = parse_sdp(
        "v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 5 RTP/AVP 8 0\n"
    )
    assert sdp.audio is not None
    assert [c.name for c in sdp.audio.codecs()] == ["PCMA", "PCMU"]


def test_it_builds_the_default_offer() -> None:
    offer = build_offer("192.0.2.1", 4000, session_id="42")
    text = str(offer)
    assert "m=audio 4000 RTP/AVP 0 8 101\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" in text
    assert "a=ptime:20\r\na=sendrecv\r\n" in text
    assert "c=IN IP4 192.0.2.1\r\n" in text
    assert "sendonly" in str(build_offer("::1", 4000, session_id="1", direction="sendonly"))
    assert "IN IP6 ::1" in str(build_offer("::1", 4000, session_id="1"))


def test_it_answers_with_first_common_codec_and_offerers_dtmf_pt() -> None:
    offer = parse_sdp(PBX_OFFER)
    answer = negotiate_answer(offer, "192.0.2.2", 5000, session_id="9")
    audio = answer.media[0]
    assert audio.formats == ["8", "96"]
    assert audio.attribute_values("fmtp") == ["96 0-16"]
    assert audio.direction == "sendrecv"
    # RFC 3264 §6: same number of m= lines; the unsupported video stream is rejected with port 0.
    assert len(answer.media) == 2 and answer.media[1].port == 0
    media = negotiated_media(answer, offer)
    assert media.codec.name == "PCMA"
    assert media.dtmf_payload_type == 96
    assert (media.remote_address, media.remote_port) == ("203.0.113.5", 10000)


def test_it_honours_our_codec_list() -> None:
    offer = parse_sdp(PBX_OFFER)
    answer = negotiate_answer(offer, "192.0.2.2", 5000, session_id="9", codecs=[Codec(0, "PCMU")])
    assert answer.media[0].formats == ["0", "96"]
    with pytest.raises(SdpNegotiationError):
        negotiate_answer(offer, "h", 1, session_id="1", codecs=[Codec(18, "G729")])


@pytest.mark.parametrize(
    ("offered", "wanted", "expected"),
    [
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendonly", "sendrecv", "recvonly"),
        ("recvonly", "sendrecv", "sendonly"),
        ("inactive", "sendrecv", "inactive"),
        ("sendrecv", "sendonly", "sendonly"),
        ("sendonly", "sendonly", "inactive"),
    ],
)
def test_it_mirrors_direction_per_rfc3264_6_1(offered: str, wanted: str, expected: str) -> None:
    assert answer_direction(offered, wanted) == expected


def test_it_detects_hold_and_resume() -> None:
    offer = build_offer("192.0.2.1", 4000, session_id="1")
    assert not is_hold(offer)
    hold = build_offer("192.0.2.1", 4000, session_id="1", version=2, direction="sendonly")
    assert is_hold(hold)
    assert is_hold(build_offer("192.0.2.1", 4000, session_id="1", direction="inactive"))
    legacy = build_offer("0.0.0.0", 4000, session_id="1")
    assert is_hold(legacy)
    answer = negotiate_answer(hold, "192.0.2.2", 5000, session_id="2")
    assert answer.media[0].direction == "recvonly"
    ours = negotiated_media(answer, hold)
    assert ours.direction == "recvonly" and ours.on_hold
    theirs = negotiated_media(hold, answer)
    assert theirs.direction == "sendonly"


def test_it_detects_connection_changes() -> None:
    a = build_offer("192.0.2.1", 4000, session_id="1")
    assert not media_changed(a, build_offer("192.0.2.1", 4000, session_id="1", version=2))
    assert media_changed(a, build_offer("192.0.2.9", 4000, session_id="1"))
    assert media_changed(a, build_offer("192.0.2.1", 4002, session_id="1"))


def test_it_negotiates_offer_side_from_answer() -> None:
    offer = build_offer("192.0.2.1", 4000, session_id="1", codecs=[PCMA])
    answer = negotiate_answer(offer, "192.0.2.2", 5000, session_id="2")
    media = negotiated_media(offer, answer)
    assert media.codec == PCMA and media.dtmf_payload_type == 101 and media.direction == "sendrecv"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "o=- 1 1 IN IP4 h\n",
        "v=0\ns=-\n",
        "v=0\no=- 1 x IN IP4 h\n",
        "v=0\no=- 1 1 IN IP4 h\nm=audio 99999 RTP/AVP 0\n",
        "v=0\no=- 1 1 IN IP4 h\nm=audio\n",
        "v=0\no=- 1 1 IN IP4 h\nc=IN IP4\n",
        "v=0\no=- 1 1 IN IP4 h\nX=1\n",
        "v=0\no=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP 0\ns=late\n",
    ],
)
def test_it_rejects_malformed_sdp(text: str) -> None:
    with pytest.raises(SdpParseError):
        parse_sdp(text)
    assert issubclass(SdpParseError, SipParseError)
    with pytest.raises(SdpParseError):
        parse_sdp(b"v=0\n\xff")
