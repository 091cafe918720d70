"""Media of calls in the worker: each call's RTP leg towards the PBX, and each browser session's
WebRTC bridge (phone.media.bridge), joined while the call is that browser's active call.

One bridge per browser session, not per call: the page negotiates WebRTC once when it opens,
and calls (dialled, answered, picked up from park, re-attached after a reload) are connected to
it without a new offer/answer round trip.
"""

from __future__ import annotations

import logging

from django.conf import settings

from phone.media.leg import RtpLeg
from phone.media.tones import JapaneseRingback, MusicOnHold
from phone.sip.sdp import NegotiatedMedia

log = logging.getLogger(__name__)


def media_address() -> str:
    """The address written into our SDP: where the PBX sends RTP."""
    return settings.MEDIA_ADDRESS or settings.SIP_BIND_ADDRESS


class MediaHub:
    """The browser-side bridges of every session this worker serves."""

    def __init__(self) -> None:
        self.bridges: dict[str, object] = {}

    def bridge_for(self, session: str):
        return self.bridges.get(session)

    async def browser_offer(self, session: str, sdp: str) -> str:
        from phone.media.bridge import MediaBridge

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
    """One call's RTP leg and whichever browser bridge currently carries its audio."""

    def __init__(self, leg: RtpLeg):
        self.leg = leg
        self.address = media_address()
        self.port = leg.local_port
        self.bridge = None
        self.live = False  # answered and not on hold: audio flows between leg and browser
        self.ringing = False

    @classmethod
    async def open(cls) -> CallMedia:
        leg = await RtpLeg.open(
            settings.SIP_BIND_ADDRESS, (settings.RTP_PORT_MIN, settings.RTP_PORT_MAX)
        )
        return cls(leg)

    def attach_browser(self, bridge) -> None:
        if bridge is self.bridge:
            return
        self.detach_browser()
        self.bridge = bridge
        self._apply()

    def detach_browser(self) -> None:
        if self.bridge is not None:
            self.bridge.disconnect()
            self.bridge.play(None)
        self.bridge = None

    def ringback(self) -> None:
        """Outgoing call not answered yet: the caller hears Japanese ringback (400 Hz, 16 Hz
        modulated, 1 s on / 2 s off) generated here."""
        self.ringing = True
        self._apply()

    def connected(self) -> None:
        self.ringing = False
        self.live = True
        self.leg.source = None
        self._apply()

    def hold(self) -> None:
        """Music on hold to the far end; the browser hears nothing of the call meanwhile."""
        self.live = False
        self.leg.source = MusicOnHold()
        self._apply()

    def resume(self) -> None:
        self.leg.source = None
        self.live = True
        self._apply()

    def _apply(self) -> None:
        if self.bridge is None:
            return
        if self.live:
            self.bridge.play(None)
            self.bridge.connect(self.leg)
        else:
            self.bridge.disconnect()
            self.bridge.play(JapaneseRingback() if self.ringing else None)

    def update_remote(self, media: NegotiatedMedia) -> None:
        """After each offer/answer (RFC 3264): where to send, which G.711 law, DTMF type."""
        self.leg.set_remote(media.remote_address, media.remote_port)
        self.leg.set_payload_type(media.codec.payload_type)
        if media.dtmf_payload_type is not None:
            self.leg.set_dtmf_payload_type(media.dtmf_payload_type)

    def dtmf(self, digits: str) -> None:
        self.leg.send_dtmf(digits)

    async def close(self) -> None:
        self.detach_browser()
        await self.leg.aclose()
