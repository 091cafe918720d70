"""A browser without a browser: an aiortc peer connection with a microphone that plays a tone
and a recorder of what it hears. Tests use it against a MediaBridge directly, or through the
phone WebSocket (webrtc.offer / webrtc.answer) exactly as the page does."""

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from phone.media.bridge import MediaBridge
from phone.media.tones import SineTone

BROWSER_HZ = 1000


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


class ToneTrack(MediaStreamTrack):
    """A microphone that hears a sine tone: 20 ms AudioFrames at 8 kHz, paced in real time."""

    kind = "audio"

    def __init__(self, frequency: float) -> None:
        super().__init__()
        self.tone = SineTone(frequency)
        self.start: float | None = None
        self.pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self.start + self.pts / 8000 - time.monotonic()))
        frame = av.AudioFrame.from_ndarray(
            self.tone.next_frame().reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, 8000)
        self.pts += 160
        return frame


class FakeBrowser:
    """The browser's side: sends a tone, records (arrival time, mono PCM) of what it hears."""

    def __init__(self, frequency: float = BROWSER_HZ, codecs: list[str] | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = self.pc.addTransceiver(ToneTrack(frequency), direction="sendrecv")
        if codecs:
            caps = RTCRtpSender.getCapabilities("audio").codecs
            transceiver.setCodecPreferences(
                [c for name in codecs for c in caps if c.mimeType == f"audio/{name}"]
            )
        self.heard: list[tuple[float, np.ndarray]] = []
        self.rate = 8000
        self._reader: asyncio.Task | None = None
        self.pc.on("track", lambda track: self._start_reading(track))

    def _start_reading(self, track: MediaStreamTrack) -> None:
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray()[0]
                if frame.layout.nb_channels == 2:
                    pcm = pcm[0::2]  # packed stereo: left channel
                self.rate = frame.sample_rate
                self.heard.append((time.monotonic(), pcm))
        except MediaStreamError:
            pass

    async def offer(self) -> str:
        """The offer the page sends as webrtc.offer (static/phone/webrtc.js does the same)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def call(self, bridge: MediaBridge) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await bridge.accept_offer(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await wait_for(
            lambda: bridge.state == "connected" and self.pc.connectionState == "connected"
        )

    def since(self, t: float) -> np.ndarray:
        chunks = [pcm for at, pcm in self.heard if at >= t]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
