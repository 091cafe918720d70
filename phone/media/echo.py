"""The line test's echo (回線テスト, issue 13, item 4): the page's own microphone, played back
to it about a second later over its peer connection, with the level it arrived at.

It checks the page's half of the path without the PBX: microphone → WebRTC → sipworker →
WebRTC → speaker. The bridge hands the browser's audio to `feed` as 8 kHz PCM frames
(MediaBridge.tap_browser); the bridge's tick takes frames out through the ToneSource
interface (MediaBridge.play), so the echo goes out exactly like ringback does.

Bounded: at most `delay` plus a little slack is buffered (older frames are dropped), and the
line stops the test after a fixed time (phone.worker.line).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from phone.media.rtp import FRAME_SAMPLES, SAMPLE_RATE
from phone.media.tones import ToneSource

__all__ = ["FLOOR_DBFS", "SILENT_DBFS", "EchoSource", "frame_dbfs", "level_percent"]

# Quieter than this is no signal at all (a digital zero frame is reported as the floor).
FLOOR_DBFS = -90.0
# The loudest 20 ms of a working microphone in a room is well above -50 dBFS (speech at arm's
# length peaks around -20); a muted or dead input sits at its noise floor, below -60.
SILENT_DBFS = -50.0
_FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE


def frame_dbfs(pcm: np.ndarray) -> float:
    """RMS level of a frame in dB relative to a full-scale square wave (dBFS)."""
    if not len(pcm):
        return FLOOR_DBFS
    rms = math.sqrt(float(np.mean(np.square(pcm.astype(np.float64)))))
    if rms < 1e-9:
        return FLOOR_DBFS
    return max(FLOOR_DBFS, 20 * math.log10(rms / 32768))


def level_percent(dbfs: float) -> int:
    """-60 dBFS → 0, 0 dBFS → 100: what the page's level bar shows."""
    return int(max(0.0, min(100.0, (dbfs + 60) * 100 / 60)))


class EchoSource(ToneSource):
    """What the browser said, `delay` seconds later (silence until then)."""

    def __init__(self, delay: float = 1.0, slack: float = 0.5) -> None:
        super().__init__(level=1.0)
        self.delay_frames = max(1, round(delay / _FRAME_SECONDS))
        self._frames: deque[np.ndarray] = deque(
            maxlen=self.delay_frames + max(1, round(slack / _FRAME_SECONDS))
        )
        self._pending = np.zeros(0, dtype=np.int16)
        self.frames_in = 0
        self.peak_dbfs = FLOOR_DBFS
        self.last_dbfs = FLOOR_DBFS

    @property
    def delay_ms(self) -> int:
        return int(self.delay_frames * _FRAME_SECONDS * 1000)

    def feed(self, pcm: np.ndarray) -> None:
        """8 kHz int16 samples from the browser (any length; re-cut into 20 ms frames)."""
        if len(pcm) != FRAME_SAMPLES or len(self._pending):
            data = np.concatenate((self._pending, pcm.astype(np.int16)))
            cut = len(data) - len(data) % FRAME_SAMPLES
            self._pending = data[cut:]
            frames = [data[i : i + FRAME_SAMPLES] for i in range(0, cut, FRAME_SAMPLES)]
        else:
            frames = [pcm.astype(np.int16)]
        for frame in frames:
            self.frames_in += 1
            self.last_dbfs = frame_dbfs(frame)
            self.peak_dbfs = max(self.peak_dbfs, self.last_dbfs)
            self._frames.append(frame)

    def next_frame(self, samples: int = FRAME_SAMPLES) -> np.ndarray:
        # One frame out per tick once a second's worth is in: the delay stays where it began
        # (a late browser packet empties the queue below the delay: silence until it refills).
        self.position += samples
        if samples == FRAME_SAMPLES and len(self._frames) > self.delay_frames:
            return self._frames.popleft()
        return np.zeros(samples, dtype=np.int16)
