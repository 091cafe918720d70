"""Test tones: write sine WAVs and find the dominant frequency of a recording.

The frequency analysis is the product's own (tests/support/analysis.py); baresip's
``aufile`` source wants mono S16LE at the codec's rate, i.e. 8000 Hz for G.711.
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

from tests.support import analysis


def write_tone(
    path: Path | str,
    freq: float,
    seconds: float,
    *,
    rate: int = 8000,
    amplitude: float = 0.5,
    channels: int = 1,
) -> Path:
    """Write a 16-bit PCM sine tone of ``freq`` Hz lasting ``seconds``."""
    path = Path(path)
    n = int(rate * seconds)
    peak = int(32767 * amplitude)
    frames = bytearray()
    for i in range(n):
        sample = int(peak * math.sin(2 * math.pi * freq * i / rate))
        frames += struct.pack("<h", sample) * channels
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return path


def write_silence(path: Path | str, seconds: float, *, rate: int = 8000) -> Path:
    return write_tone(path, 0.0, seconds, rate=rate, amplitude=0.0)


# The analysis itself is the product's (tests.support.analysis); these read a recording file.
# -40 dBFS: what counts as sound in a far end's recording (comfort noise stays below it).
SOUND_DBFS = -40.0


def active_seconds(path: Path | str, threshold_dbfs: float = SOUND_DBFS) -> float:
    """How many seconds of the recording are not silence."""
    pcm, rate = analysis.read_wav(path)
    return len(analysis.non_silent(pcm, rate, threshold_dbfs)) / rate


def dominant_frequency(path: Path | str, threshold_dbfs: float = SOUND_DBFS) -> float | None:
    """Frequency (Hz) of the strongest spectral peak over the non-silent part; None when the
    recording holds under 100 ms of sound."""
    pcm, rate = analysis.read_wav(path)
    sound = analysis.non_silent(pcm, rate, threshold_dbfs)
    if len(sound) < rate // 10:
        return None
    return analysis.dominant_frequency(sound, rate)


def tone_windows(pcm, rate: int = 8000, seconds: float = 0.5) -> list[int | None]:
    """The dominant frequency (Hz, rounded; None for silence) of each window of a recording,
    to follow what a far end heard over a call (ringback, the other party, music on hold)."""
    step = int(rate * seconds)
    result: list[int | None] = []
    for start in range(0, len(pcm) - step, step):
        chunk = pcm[start : start + step]
        quiet = analysis.rms_dbfs(chunk) < -45
        result.append(None if quiet else round(analysis.dominant_frequency(chunk, rate)))
    return result
