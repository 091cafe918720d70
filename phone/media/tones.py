"""Call-progress tones and music on hold, generated (never fetched) as 8 kHz int16 frames.

Every generator is a pure function of the absolute sample index, so consecutive frames join
without phase jumps whatever the frame size, and two generators built alike produce identical
audio (handy in tests). Cadenced tones are gated with short raised-cosine ramps so the on/off
edges do not click.

Japanese call-progress tones as the domestic network plays them: 呼出音 (ringback) is 400 Hz
amplitude-modulated by 16 Hz, 1 s on / 2 s off; 話中音 (busy) is 400 Hz, 0.5 s on / 0.5 s off.
Callers in Japan know these by ear, so the worker plays them rather than a US 440+480 Hz tone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from phone.media import g711
from phone.media.rtp import FRAME_SAMPLES, SAMPLE_RATE

__all__ = [
    "IncomingRing",
    "JapaneseBusy",
    "JapaneseRingback",
    "MusicOnHold",
    "SineTone",
    "ToneSource",
]

_RAMP_S = 0.004  # 4 ms edges: short enough to keep cadence timing, long enough not to click


class ToneSource:
    """Base: a stream of int16 PCM frames at `rate` Hz; `level` is the peak (of full scale)."""

    def __init__(self, level: float = 0.3, rate: int = SAMPLE_RATE) -> None:
        if not 0.0 <= level <= 1.0:
            raise ValueError("level is a fraction of full scale, 0..1")
        self.level = level
        self.rate = rate
        self.position = 0  # absolute index of the next sample
        self._encoded: dict[int, bytes] = {}

    @property
    def period(self) -> int | None:
        """Samples after which the wave repeats exactly (None: it does not, or not known)."""
        return None

    def _wave(self, n: np.ndarray) -> np.ndarray:
        """Samples in [-1, 1] for absolute sample indices n (int64)."""
        raise NotImplementedError

    def _render(self, start: int, samples: int) -> np.ndarray:
        n = np.arange(start, start + samples, dtype=np.int64)
        return np.round(self._wave(n) * (self.level * 32767)).astype(np.int16)

    def next_frame(self, samples: int = FRAME_SAMPLES) -> np.ndarray:
        pcm = self._render(self.position, samples)
        self.position += samples
        return pcm

    def next_payload(self, payload_type: int, samples: int = FRAME_SAMPLES) -> bytes:
        """The next frame G.711-encoded (what a leg or a G.711 browser gets): the same bytes
        as encoding next_frame(). A periodic source (music on hold, call-progress tones) is
        encoded once per law and then sliced, so playing it costs no numpy per frame."""
        period = self.period
        if period is None or samples > period:
            return g711.encode(self.next_frame(samples), payload_type)
        loop = self._encoded.get(payload_type)
        if loop is None:
            loop = self._encoded[payload_type] = g711.encode(self._render(0, period), payload_type)
        start = self.position % period
        self.position += samples
        end = start + samples
        return loop[start:end] if end <= period else loop[start:] + loop[: end - period]

    def skip(self, samples: int = FRAME_SAMPLES) -> None:
        """Move on without producing the samples (e.g. while a DTMF event replaces audio)."""
        self.position += samples

    def frames(
        self, count: int | None = None, samples: int = FRAME_SAMPLES
    ) -> Iterator[np.ndarray]:
        """Successive frames; endless when count is None."""
        i = 0
        while count is None or i < count:
            yield self.next_frame(samples)
            i += 1

    def render(self, seconds: float) -> np.ndarray:
        """The next `seconds` of audio as one array."""
        return self.next_frame(round(seconds * self.rate))


def _sine(freq: float, n: np.ndarray, rate: int) -> np.ndarray:
    # Reduce the phase in integer arithmetic first when possible so precision does not decay
    # over hours of samples: for integer freq, (freq * n) mod rate is exact.
    if float(freq).is_integer():
        cycles = (int(freq) * n) % rate / rate
    else:
        cycles = np.mod(freq * n / rate, 1.0)
    return np.sin(2 * np.pi * cycles)


def _period(rate: int, frequencies: tuple[int, ...], cadence_s: float) -> int:
    """Samples after which integer-frequency sines under an on/off cadence all repeat."""
    return math.lcm(round(cadence_s * rate), *(rate // math.gcd(f, rate) for f in frequencies))


def _gate(n: np.ndarray, rate: int, on_s: float, off_s: float) -> np.ndarray:
    """0..1 envelope: on for on_s, off for off_s, repeating, with raised-cosine edges."""
    period = round((on_s + off_s) * rate)
    on = round(on_s * rate)
    ramp = max(1, int(_RAMP_S * rate))
    t = n % period
    env = np.where(t < on, 1.0, 0.0)
    rise = t < ramp
    fall = (t >= on - ramp) & (t < on)
    env = np.where(rise, 0.5 - 0.5 * np.cos(np.pi * t / ramp), env)
    env = np.where(fall, 0.5 - 0.5 * np.cos(np.pi * (on - t) / ramp), env)
    return env


class SineTone(ToneSource):
    """A continuous sine tone, e.g. SineTone(1000) as a test signal."""

    def __init__(self, frequency: float, level: float = 0.3, rate: int = SAMPLE_RATE) -> None:
        super().__init__(level, rate)
        if not 0 < frequency < rate / 2:
            raise ValueError("frequency must be between 0 and Nyquist")
        self.frequency = frequency

    @property
    def period(self) -> int | None:
        # Exact for integer frequencies: _sine reduces the phase in integer arithmetic.
        if not float(self.frequency).is_integer():
            return None
        return self.rate // math.gcd(int(self.frequency), self.rate)

    def _wave(self, n: np.ndarray) -> np.ndarray:
        return _sine(self.frequency, n, self.rate)


class JapaneseRingback(ToneSource):
    """呼出音: 400 Hz modulated by 16 Hz, 1 s on / 2 s off."""

    carrier = 400
    modulation = 16
    depth = 0.8  # modulation depth; the NTT tone is clearly "warbled"

    @property
    def period(self) -> int | None:
        return _period(self.rate, (self.carrier, self.modulation), 3.0)

    def _wave(self, n: np.ndarray) -> np.ndarray:
        am = (1 + self.depth * _sine(self.modulation, n, self.rate)) / (1 + self.depth)
        wave: np.ndarray = _sine(self.carrier, n, self.rate) * am * _gate(n, self.rate, 1.0, 2.0)
        return wave


class JapaneseBusy(ToneSource):
    """話中音: 400 Hz, 0.5 s on / 0.5 s off."""

    @property
    def period(self) -> int | None:
        return _period(self.rate, (400,), 1.0)

    def _wave(self, n: np.ndarray) -> np.ndarray:
        wave: np.ndarray = _sine(400, n, self.rate) * _gate(n, self.rate, 0.5, 0.5)
        return wave


class IncomingRing(ToneSource):
    """Local "you have a call" ring: 1000/1300 Hz trill (alternating every 25 ms), 1 s on / 2 s off.

    Played to the user's own speaker, so it deliberately sounds unlike the network ringback.
    """

    @property
    def period(self) -> int | None:
        trill = 2 * int(0.025 * self.rate)  # low, high: one trill cycle
        return math.lcm(_period(self.rate, (1000, 1300), 3.0), trill)

    def _wave(self, n: np.ndarray) -> np.ndarray:
        half = int(0.025 * self.rate)
        low = (n // half) % 2 == 0
        tone = np.where(low, _sine(1000, n, self.rate), _sine(1300, n, self.rate))
        wave: np.ndarray = tone * _gate(n, self.rate, 1.0, 2.0)
        return wave


# MIDI note numbers and beats of a short, calm loop (an original arpeggiated figure in C major,
# I - vi - IV - V). Rendered once and then replayed.
_MOH_MELODY: tuple[tuple[int, float], ...] = (
    (72, 1), (76, 1), (79, 1), (76, 1),
    (69, 1), (72, 1), (76, 1), (72, 1),
    (65, 1), (69, 1), (72, 1), (77, 1),
    (67, 1), (71, 1), (74, 1), (79, 2),
    (0, 1),
)  # fmt: skip


class MusicOnHold(ToneSource):
    """A looping melody of soft sine notes (fundamental + a little 2nd harmonic, decaying)."""

    def __init__(
        self, level: float = 0.25, rate: int = SAMPLE_RATE, tempo_bpm: float = 132
    ) -> None:
        super().__init__(level, rate)
        self._loop = self._render_loop(tempo_bpm)

    def _render_loop(self, tempo_bpm: float) -> np.ndarray:
        beat = 60.0 / tempo_bpm
        parts = []
        for note, beats in _MOH_MELODY:
            count = round(beats * beat * self.rate)
            t = np.arange(count) / self.rate
            if note == 0:
                parts.append(np.zeros(count))
                continue
            freq = 440.0 * 2 ** ((note - 69) / 12)
            # Piano-ish envelope: 10 ms attack, exponential decay, 15 ms release to zero so
            # notes (and the loop seam) join without clicks.
            env = np.minimum(1.0, t / 0.010) * np.exp(-2.5 * t)
            release = int(0.015 * self.rate)
            env[-release:] *= np.linspace(1.0, 0.0, release)
            wave = np.sin(2 * np.pi * freq * t) + 0.2 * np.sin(4 * np.pi * freq * t)
            parts.append(wave * env / 1.2)
        return np.concatenate(parts)

    @property
    def period(self) -> int | None:
        return len(self._loop)

    @property
    def loop_seconds(self) -> float:
        return len(self._loop) / self.rate

    def _wave(self, n: np.ndarray) -> np.ndarray:
        wave: np.ndarray = self._loop[n % len(self._loop)]
        return wave
