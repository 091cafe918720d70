"""Tone analysis used to prove audio end to end: "1000 Hz went one way, 700 Hz came back".

dominant_frequency: FFT peak with interpolation between bins (sub-Hz accuracy on 1 s of tone).
goertzel_power: the share of the signal's energy at one frequency (Goertzel recurrence).
wav_dominant_frequency: the above over the non-silent part of a WAV file (baresip's sndfile
recordings, browser captures); stdlib `wave` only.
"""

from __future__ import annotations

import math
import wave
from os import PathLike

import numpy as np

from phone.media.rtp import SAMPLE_RATE

__all__ = [
    "dominant_frequency",
    "goertzel_power",
    "has_tone",
    "non_silent",
    "read_wav",
    "rms_dbfs",
    "wav_dominant_frequency",
]


def _as_float(pcm: np.ndarray) -> np.ndarray:
    x = np.asarray(pcm, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError("expected mono samples (1-D array)")
    return x


def rms_dbfs(pcm: np.ndarray) -> float:
    """RMS level relative to int16 full scale, in dB (-inf for digital silence)."""
    x = _as_float(pcm)
    if not len(x):
        return -math.inf
    rms = math.sqrt(float(np.mean(x * x)))
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


def dominant_frequency(pcm: np.ndarray, rate: int = SAMPLE_RATE, min_hz: float = 50.0) -> float:
    """Frequency (Hz) of the strongest spectral peak above `min_hz`.

    Hann window, then Gaussian (log-parabolic) interpolation of the peak bin with its
    neighbours: for a Hann-windowed sinusoid the log-magnitude around the peak is close to a
    parabola, so this lands within a small fraction of a bin.
    """
    x = _as_float(pcm)
    if len(x) < 16:
        raise ValueError("need at least 16 samples")
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    lo = max(1, math.ceil(min_hz * len(x) / rate))
    if lo >= len(spectrum) - 1:
        raise ValueError("min_hz is above the analysable band")
    k = lo + int(np.argmax(spectrum[lo:-1]))
    a, b, c = (math.log(max(v, 1e-12)) for v in spectrum[k - 1 : k + 2])
    denom = a - 2 * b + c
    offset = 0.5 * (a - c) / denom if denom else 0.0
    return (k + offset) * rate / len(x)


def goertzel_power(pcm: np.ndarray, frequency: float, rate: int = SAMPLE_RATE) -> float:
    """Share (0..1) of the signal's energy at `frequency`, via the Goertzel recurrence.

    Normalised so a pure tone with a whole number of cycles in the block gives 1.0; use blocks
    long enough (e.g. >= 100 ms) that the bin is narrower than the tones you tell apart.
    """
    x = _as_float(pcm)
    energy = float(np.dot(x, x))
    if energy == 0 or not len(x):
        return 0.0
    w = 2 * math.pi * frequency / rate
    coeff = 2 * math.cos(w)
    s1 = s2 = 0.0
    # The recurrence is inherently sequential; a Python loop over a few thousand samples is
    # fast enough for tests and avoids building a full spectrum.
    for sample in x.tolist():
        s1, s2 = sample + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2  # |X(f)|^2
    return min(1.0, 2 * power / (len(x) * energy))


def has_tone(
    pcm: np.ndarray, frequency: float, rate: int = SAMPLE_RATE, min_share: float = 0.5
) -> bool:
    """True if at least `min_share` of the energy sits at `frequency`."""
    return goertzel_power(pcm, frequency, rate) >= min_share


def read_wav(path: str | PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file as mono int16 samples (first channel) and its sample rate."""
    with wave.open(str(path), "rb") as wav:
        channels = wav.getnchannels()
        width = wav.getsampwidth()
        rate = wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width == 1:  # 8-bit WAV is unsigned
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2")
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        data = ((b[:, 2].astype(np.int8).astype(np.int32) << 8) | b[:, 1]).astype(np.int16)
    elif width == 4:
        data = (np.frombuffer(raw, dtype="<i4") >> 16).astype(np.int16)
    else:
        raise ValueError(f"unsupported sample width: {width} bytes")
    return np.ascontiguousarray(data.reshape(-1, channels)[:, 0]).astype(np.int16), rate


def non_silent(
    pcm: np.ndarray, rate: int = SAMPLE_RATE, threshold_dbfs: float = -45.0, frame_ms: int = 20
) -> np.ndarray:
    """The samples of all `frame_ms` blocks louder than `threshold_dbfs`, concatenated."""
    x = np.asarray(pcm)
    size = max(1, rate * frame_ms // 1000)
    usable = len(x) - len(x) % size
    if usable == 0:
        return x[:0]
    blocks = x[:usable].astype(np.float64).reshape(-1, size)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    loud = rms > 32768 * 10 ** (threshold_dbfs / 20)
    return x[:usable].reshape(-1, size)[loud].reshape(-1)


def wav_dominant_frequency(
    path: str | PathLike[str], threshold_dbfs: float = -45.0, max_seconds: float = 10.0
) -> float | None:
    """Dominant frequency over the non-silent part of a WAV file; None if it is all silence."""
    pcm, rate = read_wav(path)
    sound = non_silent(pcm, rate, threshold_dbfs)
    if len(sound) < rate // 20:  # under 50 ms of sound is not a tone we can vouch for
        return None
    return dominant_frequency(sound[: int(max_seconds * rate)], rate)
