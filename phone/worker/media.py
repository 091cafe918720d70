"""Media of calls in the worker: each call's RTP leg towards the PBX, and each browser session's
WebRTC bridge (phone.media.bridge).

One bridge per browser session, not per call: the page negotiates WebRTC once when it opens,
and calls (dialled, answered, re-attached after a reload) are connected to it without a new
offer/answer round trip. Which call a bridge carries is decided in one place, the line's
`route_media`, from `LineCall.session`; this module only carries the decision out.
"""

from __future__ import annotations

import logging
import secrets

from django.conf import settings

from phone.media.bridge import MediaBridge
from phone.media.leg import RtpLeg
from phone.media.srtp import SrtpContext
from phone.media.tones import JapaneseRingback, MusicOnHold, ToneSource
from phone.sip.sdp import (
    ENCRYPTION_NONE,
    NegotiatedMedia,
    SessionDescription,
    SrtpParameters,
    build_offer,
    negotiate_answer,
)

log = logging.getLogger(__name__)


def media_address() -> str:
    """The address written into our SDP: where the PBX sends RTP."""
    return str(settings.MEDIA_ADDRESS or settings.SIP_BIND_ADDRESS)


class MediaHub:
    """The browser-side bridges of every session this worker serves."""

    def __init__(self) -> None:
        self.bridges: dict[str, MediaBridge] = {}

    def bridge_for(self, session: str | None) -> MediaBridge | None:
        return self.bridges.get(session) if session is not None else None

    async def browser_offer(self, session: str, sdp: str) -> str:
        old = self.bridges.pop(session, None)
        if old is not None:
            await old.close()
        bridge = MediaBridge(ice_servers=list(settings.ICE_SERVERS))
        self.bridges[session] = bridge
        return await bridge.accept_offer(sdp)

    async def drop_session(self, session: str) -> None:
        bridge = self.bridges.pop(session, None)
        if bridge is not None:
            await bridge.close()

    async def close(self) -> None:
        for session in list(self.bridges):
            await self.drop_session(session)


class CallMedia:
    """One call's RTP leg, and what the far end and the browser hear besides the other party."""

    def __init__(self, leg: RtpLeg):
        self.leg = leg
        self.address = media_address()
        self.port = leg.local_port
        # One ringback per call, so that re-routing keeps its cadence (1 s on, 2 s off).
        self.ringback: ToneSource = JapaneseRingback()

    @classmethod
    async def open(cls) -> CallMedia:
        leg = await RtpLeg.open(
            settings.SIP_BIND_ADDRESS, (settings.RTP_PORT_MIN, settings.RTP_PORT_MAX)
        )
        return cls(leg)

    def offer(self, encryption: str = ENCRYPTION_NONE) -> SessionDescription:
        """Our SDP offer for this leg; RTP/SAVP with fresh SDES keys when `encryption` (the
        tenant's setting) requires SRTP (RFC 4568 §5.1.1)."""
        offer = build_offer(
            self.address, self.port, session_id=_session_id(), encryption=encryption
        )
        self._expect_srtp(offer)
        return offer

    def answer(
        self, offer: SessionDescription | None, encryption: str = ENCRYPTION_NONE
    ) -> SessionDescription:
        """Our answer to `offer` (SdpNegotiationError: answer 488), or our offer when the
        INVITE had none (RFC 3261 §13.2.1: the answer then comes in the ACK)."""
        if offer is None:
            return self.offer(encryption)
        answer = negotiate_answer(
            offer, self.address, self.port, session_id=_session_id(), encryption=encryption
        )
        self._expect_srtp(answer)
        return answer

    def _expect_srtp(self, sdp: SessionDescription) -> None:
        # From the moment our SDP says RTP/SAVP, the leg sends and plays nothing unprotected
        # (keys arrive with the other side's SDP: update_remote).
        audio = sdp.audio
        if audio is not None and audio.proto.upper().startswith("RTP/SAVP"):
            self.leg.srtp_required = True

    def far_end_hears_music(self, on: bool) -> None:
        """Music on hold to the far end while we hold the call."""
        if on and not isinstance(self.leg.source, MusicOnHold):
            self.leg.source = MusicOnHold()
        elif not on:
            self.leg.source = None

    def update_remote(self, media: NegotiatedMedia) -> None:
        """After each offer/answer (RFC 3264): SRTP keys, where to send, which G.711 law,
        DTMF type."""
        if media.srtp is not None:
            self._update_srtp(media.srtp)
        self.leg.set_remote(media.remote_address, media.remote_port)
        self.leg.set_payload_type(media.codec.payload_type)
        if media.dtmf_payload_type is not None:
            self.leg.set_dtmf_payload_type(media.dtmf_payload_type)

    def _update_srtp(self, params: SrtpParameters) -> None:
        current = self.leg.srtp
        if current is not None and current.same_keys(
            params.suite, params.local_key, params.remote_key
        ):
            return  # same keys: keep rollover counters and replay windows (RFC 3711 §3.3.1)
        self.leg.set_srtp(SrtpContext(params.suite, params.local_key, params.remote_key))

    def dtmf(self, digits: str) -> None:
        self.leg.send_dtmf(digits)

    async def close(self) -> None:
        await self.leg.aclose()


def _session_id() -> str:
    return str(secrets.randbelow(10**9))


def carry(
    bridge: MediaBridge, media: CallMedia | None, *, live: bool, tone: ToneSource | None
) -> None:
    """Make `bridge` carry what the line decided: the call's audio (live), a tone (ringback,
    the busy tone), or nothing. Only changes what differs, so the browser's stream is not
    re-marked needlessly."""
    if media is not None and live:
        if bridge.source is not None:
            bridge.play(None)
        bridge.connect(media.leg)
        return
    bridge.disconnect()
    if bridge.source is not tone:
        bridge.play(tone)
