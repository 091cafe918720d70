"""offer_refusal: whether an INVITE's offer can be answered under the tenant's SRTP setting,
asked before any page rings - by the very rules of negotiate_answer, with literal SDP."""

from __future__ import annotations

import pytest

from phone.sip.sdp import (
    ENCRYPTION_NONE,
    ENCRYPTION_SDES,
    ENCRYPTION_SDES_OPTIONAL,
    SdpNegotiationError,
    negotiate_answer,
    offer_refusal,
    parse_sdp,
)
from tests.sip.test_sdp_crypto import BARESIP_OFFER, offer_text

PLAIN = offer_text("RTP/AVP")
G722_ONLY = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n"
)


def test_it_refuses_plain_rtp_when_srtp_is_required_and_says_it_is_insecure():
    refusal = offer_refusal(parse_sdp(PLAIN), ENCRYPTION_SDES)
    assert refusal is not None and refusal.insecure
    assert "SRTP" in refusal.reason


@pytest.mark.parametrize("encryption", [ENCRYPTION_NONE, ENCRYPTION_SDES_OPTIONAL])
def test_it_accepts_plain_rtp_when_srtp_is_not_required(encryption):
    assert offer_refusal(parse_sdp(PLAIN), encryption) is None


@pytest.mark.parametrize("encryption", [ENCRYPTION_SDES, ENCRYPTION_SDES_OPTIONAL])
def test_it_accepts_an_srtp_offer_the_setting_allows(encryption):
    assert offer_refusal(parse_sdp(BARESIP_OFFER), encryption) is None


def test_an_srtp_offer_on_a_plain_line_is_refused_but_not_insecure():
    refusal = offer_refusal(parse_sdp(BARESIP_OFFER), ENCRYPTION_NONE)
    assert refusal is not None and not refusal.insecure


def test_no_common_codec_is_refused_but_not_insecure_even_under_sdes():
    refusal = offer_refusal(parse_sdp(G722_ONLY), ENCRYPTION_SDES)
    assert refusal is not None and not refusal.insecure


@pytest.mark.parametrize("offer", [PLAIN, BARESIP_OFFER, G722_ONLY, offer_text("RTP/SAVP")])
@pytest.mark.parametrize("encryption", [ENCRYPTION_NONE, ENCRYPTION_SDES, ENCRYPTION_SDES_OPTIONAL])
def test_it_agrees_with_negotiate_answer(offer, encryption):
    sdp = parse_sdp(offer)
    try:
        negotiate_answer(sdp, "192.0.2.1", 4000, session_id="1", encryption=encryption)
    except SdpNegotiationError as exc:
        refusal = offer_refusal(sdp, encryption)
        assert refusal is not None and refusal.reason == str(exc)
    else:
        assert offer_refusal(sdp, encryption) is None
