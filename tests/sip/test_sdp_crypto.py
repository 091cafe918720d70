"""SDES (RFC 4568) in our SDP: a=crypto parsing, the offer, the answer rules, and the keys the
media layer gets - with literal SDP text."""

from __future__ import annotations

import base64

import pytest

from phone.sip.sdp import (
    ENCRYPTION_NONE,
    ENCRYPTION_SDES,
    ENCRYPTION_SDES_OPTIONAL,
    SRTP_KEY_LENGTH,
    SdpCryptoError,
    SdpNegotiationError,
    build_offer,
    crypto_lines,
    negotiate_answer,
    negotiated_media,
    parse_crypto,
    parse_sdp,
    sdes_of,
)

KEY_A = bytes(range(30))
KEY_A64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"
KEY_B = bytes(range(100, 130))
KEY_B64 = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CB"


def offer_text(proto: str = "RTP/SAVP", *crypto: str) -> str:
    lines = "".join(f"a=crypto:{c}\r\n" for c in crypto)
    return (
        "v=0\r\n"
        "o=- 1 1 IN IP4 192.0.2.7\r\n"
        "s=-\r\n"
        "c=IN IP4 192.0.2.7\r\n"
        "t=0 0\r\n"
        f"m=audio 40000 {proto} 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        f"{lines}"
        "a=sendrecv\r\n"
    )


# What baresip's srtp module (mediaenc=srtp-mand) offers, in its order.
BARESIP_OFFER = offer_text(
    "RTP/SAVP",
    "1 AES_256_CM_HMAC_SHA1_32 inline:"
    "yMnKy8zNzs/Q0dLT1NXW19jZ2tvc3d7f4OHi4+TlyMnKy8zNzs/Q0dLT1NXW19jZ2g==",
    f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A64}",
    f"3 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64}",
)


def answer_to(offer: str, encryption: str = ENCRYPTION_SDES, key: bytes | None = None) -> str:
    return str(
        negotiate_answer(
            parse_sdp(offer), "198.51.100.1", 20000, session_id="9", encryption=encryption,
            srtp_key=key,
        )
    )  # fmt: skip


def test_it_parses_a_crypto_line_per_rfc_4568_section_9_1() -> None:
    crypto = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A64}")
    assert crypto is not None
    assert (crypto.tag, crypto.suite, crypto.key) == (1, "AES_CM_128_HMAC_SHA1_80", KEY_A)
    # A lifetime is accepted (and ignored: we never re-key in a call), in both spellings.
    for lifetime in ("|2^31", "|1048576"):
        parsed = parse_crypto(f"7 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A64}{lifetime}")
        assert parsed is not None and parsed.tag == 7 and parsed.key == KEY_A


@pytest.mark.parametrize(
    "value",
    [
        # RFC 4568 §9.1's own example: an MKI, which libsrtp through pylibsrtp cannot do.
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A64}|1:4",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A64};inline:{KEY_B64}",  # a key list
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A64} KDR=1",  # session parameter
        f"1 F8_128_HMAC_SHA1_80 inline:{KEY_A64}",
        "1 AEAD_AES_128_GCM inline:whatever-its-key-format-is",
    ],
)
def test_it_skips_well_formed_lines_it_cannot_use(value: str) -> None:
    assert parse_crypto(value) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "malformed"),
        ("AES_CM_128_HMAC_SHA1_80 inline:" + KEY_A64, "malformed"),  # no tag
        ("1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_A64, "malformed"),  # tag > 9 digits
        ("1 AES_CM_128_HMAC_SHA1_80", "malformed"),  # no key-params
        ("1 AES_CM_128_HMAC_SHA1_80 uri:https://example.com/key", "not inline"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_A64[:-4], "30 octets"),  # 27 octets
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_A64 + "AAAA", "30 octets"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_A64[:-1] + "!", "not base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_A64 + "|2^x", "lifetime"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_A64 + "|1|2|3", "too many"),
    ],
)
def test_it_calls_malformed_lines_malformed_without_echoing_the_key(
    value: str, reason: str
) -> None:
    with pytest.raises(SdpCryptoError, match=reason) as info:
        parse_crypto(value)
    assert KEY_A64[:12] not in str(info.value)


def test_it_offers_savp_with_a_fresh_key_per_suite_and_per_call() -> None:
    first = build_offer("198.51.100.1", 20000, session_id="1", encryption=ENCRYPTION_SDES)
    text = str(first)
    assert "m=audio 20000 RTP/SAVP 0 8 101\r\n" in text
    audio = first.audio
    assert audio is not None
    lines = crypto_lines(audio)
    assert [(c.tag, c.suite) for c in lines] == [
        (1, "AES_CM_128_HMAC_SHA1_80"),
        (2, "AES_CM_128_HMAC_SHA1_32"),
    ]
    assert all(len(c.key) == SRTP_KEY_LENGTH for c in lines)
    second = build_offer("198.51.100.1", 20000, session_id="1", encryption=ENCRYPTION_SDES)
    second_audio = second.audio
    assert second_audio is not None
    keys = {c.key for c in lines} | {c.key for c in crypto_lines(second_audio)}
    assert len(keys) == 4  # no key is ever reused
    # "When offered" and "none" offer plain RTP, without a=crypto.
    for encryption in (ENCRYPTION_NONE, ENCRYPTION_SDES_OPTIONAL):
        plain = str(build_offer("198.51.100.1", 20000, session_id="1", encryption=encryption))
        assert "RTP/AVP" in plain and "crypto" not in plain


def test_it_answers_the_first_supported_crypto_line_with_its_tag_and_our_key() -> None:
    answer = answer_to(BARESIP_OFFER)
    assert "m=audio 20000 RTP/SAVP 0 101\r\n" in answer
    cryptos = [line for line in answer.split("\r\n") if line.startswith("a=crypto:")]
    assert len(cryptos) == 1  # RFC 4568 §7.1.2: exactly one
    tag, suite, inline = cryptos[0][len("a=crypto:") :].split(" ")
    assert (tag, suite) == ("2", "AES_CM_128_HMAC_SHA1_80")  # tag 1's suite is unsupported
    ours = base64.b64decode(inline.removeprefix("inline:"))
    assert len(ours) == SRTP_KEY_LENGTH and ours not in (KEY_A, KEY_B)


def test_the_offerers_preference_wins_among_supported_suites() -> None:
    offer = offer_text(
        "RTP/SAVP",
        f"5 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64}",
        f"6 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A64}",
    )
    assert "a=crypto:5 AES_CM_128_HMAC_SHA1_32 inline:" in answer_to(offer)
    # "When offered" answers SRTP the same way.
    assert "a=crypto:5 " in answer_to(offer, ENCRYPTION_SDES_OPTIONAL)


@pytest.mark.parametrize(
    ("offer", "encryption", "reason"),
    [
        (offer_text("RTP/AVP"), ENCRYPTION_SDES, "SRTP .* is required"),
        (offer_text("RTP/SAVP"), ENCRYPTION_SDES, "no supported SRTP crypto-suite"),
        (
            offer_text("RTP/SAVP", f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_A64}{KEY_A64}"),
            ENCRYPTION_SDES,
            "no supported SRTP crypto-suite",
        ),
        (
            offer_text("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A64}|1:4"),
            ENCRYPTION_SDES_OPTIONAL,
            "no supported SRTP crypto-suite",
        ),
        (offer_text("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A64}"), "none", "plain"),
        (offer_text("RTP/SAVP", "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ="), "sdes", "octets"),
        (offer_text("UDP/TLS/RTP/SAVP"), ENCRYPTION_SDES, "no common audio codec"),
    ],
)
def test_it_refuses_offers_the_setting_cannot_accept(
    offer: str, encryption: str, reason: str
) -> None:
    # The line answers SdpNegotiationError with 488 Not Acceptable Here (RFC 3261 §13.3.1.3).
    with pytest.raises(SdpNegotiationError, match=reason):
        answer_to(offer, encryption)


def test_plain_offers_stay_plain_unless_srtp_is_required() -> None:
    for encryption in (ENCRYPTION_NONE, ENCRYPTION_SDES_OPTIONAL):
        answer = answer_to(offer_text("RTP/AVP"), encryption)
        assert "RTP/AVP 0 101" in answer and "crypto" not in answer


def test_it_bounds_the_number_of_crypto_lines() -> None:
    many = [f"{i} AES_CM_128_HMAC_SHA1_80 inline:{KEY_A64}" for i in range(1, 40)]
    with pytest.raises(SdpCryptoError, match="more than"):
        answer_to(offer_text("RTP/SAVP", *many))


def test_the_offerer_gets_the_keys_of_the_tag_the_answer_chose() -> None:
    offer = build_offer("198.51.100.1", 20000, session_id="1", encryption=ENCRYPTION_SDES)
    audio = offer.audio
    assert audio is not None
    ours = {c.tag: c.key for c in crypto_lines(audio)}
    answer = parse_sdp(
        offer_text("RTP/SAVP", f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64}").replace(
            " 0 8 101", " 0 101"
        )
    )
    media = negotiated_media(offer, answer)
    assert media.srtp is not None
    assert media.srtp.suite == "AES_CM_128_HMAC_SHA1_32"
    assert (media.srtp.local_key, media.srtp.remote_key) == (ours[2], KEY_B)
    assert KEY_B64 not in repr(media) and repr(ours[2]) not in repr(media)


@pytest.mark.parametrize(
    "answer",
    [
        offer_text("RTP/AVP"),  # SRTP dropped by the answerer: never fall back to plain
        offer_text("RTP/SAVP"),  # no a=crypto at all
        offer_text("RTP/SAVP", f"9 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"),  # tag not ours
        offer_text("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64}"),  # suite changed
    ],
)
def test_the_offerer_refuses_answers_that_do_not_match_its_srtp_offer(answer: str) -> None:
    offer = build_offer("198.51.100.1", 20000, session_id="1", encryption=ENCRYPTION_SDES)
    with pytest.raises(SdpNegotiationError):
        negotiated_media(offer, parse_sdp(answer))


def test_a_plain_offer_answered_with_srtp_is_refused_too() -> None:
    offer = build_offer("198.51.100.1", 20000, session_id="1")
    answer = offer_text("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}")
    with pytest.raises(SdpNegotiationError):
        negotiated_media(offer, parse_sdp(answer))
    assert negotiated_media(offer, parse_sdp(offer_text("RTP/AVP"))).srtp is None


def test_the_answerer_gets_its_own_key_and_the_chosen_offer_lines_key() -> None:
    offer = parse_sdp(BARESIP_OFFER)
    answer = parse_sdp(answer_to(BARESIP_OFFER, key=KEY_B))
    media = negotiated_media(answer, offer)
    assert media.srtp is not None
    assert (media.srtp.suite, media.srtp.local_key, media.srtp.remote_key) == (
        "AES_CM_128_HMAC_SHA1_80",
        KEY_B,
        KEY_A,
    )


def test_a_reoffer_in_an_srtp_call_keeps_our_key_and_may_not_drop_srtp() -> None:
    ours = parse_sdp(answer_to(BARESIP_OFFER, key=KEY_B))
    encryption, key = sdes_of(ours)
    assert (encryption, key) == (ENCRYPTION_SDES, KEY_B)
    reanswer = answer_to(BARESIP_OFFER.replace("a=sendrecv", "a=sendonly"), encryption, key)
    assert f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}\r\n" in reanswer
    assert "a=recvonly" in reanswer
    with pytest.raises(SdpNegotiationError):
        answer_to(offer_text("RTP/AVP"), encryption, key)
    plain = parse_sdp(answer_to(offer_text("RTP/AVP"), ENCRYPTION_NONE))
    assert sdes_of(plain) == (ENCRYPTION_NONE, None)
