"""Media of calls in the worker: each call's RTP leg towards the PBX, and each browser session's
WebRTC bridge (phone.media.bridge).

One bridge per browser session, not per call: the page negotiates WebRTC once when it opens,
and calls (dialled, answered, re-attached after a reload) are connected to it without a new
offer/answer round trip. Which call a bridge carries is decided in one place, the line's
`route_media`, from `LineCall.session`; this module only carries the decision out.
"""

from __future__ import annotations

import logging

from django.conf import settings

from phone.media.bridge import MediaBridge
from phone.media.leg import RtpLeg
from phone.media.tones import JapaneseRingback, MusicOnHold, ToneSource
from phone.sip.sdp import NegotiatedMedia

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

    def far_end_hears_music(self, on: bool) -> None:
        """Music on hold to the far end while we hold the call."""
        if on and not isinstance(self.leg.source, MusicOnHold):
            self.leg.source = MusicOnHold()
        elif not on:
            self.leg.source = None

    def update_remote(self, media: NegotiatedMedia) -> None:
        """After each offer/answer (RFC 3264): where to send, which G.711 law, DTMF type."""
        self.leg.set_remote(media.remote_address, media.remote_port)
        self.leg.set_payload_type(media.codec.payload_type)
        if media.dtmf_payload_type is not None:
            self.leg.set_dtmf_payload_type(media.dtmf_payload_type)

    def dtmf(self, digits: str) -> None:
        self.leg.send_dtmf(digits)

    async def close(self) -> None:
        await self.leg.aclose()


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
