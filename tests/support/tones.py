"""Test tones: write sine WAVs and find the dominant frequency of a recording.

Small on purpose (the product's analyser lives in phone/media/analysis.py). baresip's
``aufile`` source wants mono S16LE at the codec's rate, i.e. 8000 Hz for G.711.
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np


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


def read_wav(path: Path | str) -> tuple[np.ndarray, int]:
    """Samples of a 16-bit PCM WAV as float64 in [-1, 1] (first channel) and the rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM is supported")
        rate = w.getframerate()
        channels = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        data = data[::channels]
    return data.astype(np.float64) / 32768.0, rate


def _active(samples: np.ndarray, rate: int, threshold: float) -> np.ndarray:
    """Samples from 20 ms blocks whose RMS is above ``threshold`` (drops silence)."""
    block = max(1, rate // 50)
    usable = len(samples) - len(samples) % block
    if usable == 0:
        return samples[:0]
    blocks = samples[:usable].reshape(-1, block)
    rms = np.sqrt(np.mean(blocks**2, axis=1))
    return blocks[rms > threshold].reshape(-1)


def active_seconds(path: Path | str, threshold: float = 0.01) -> float:
    """How many seconds of the recording are not silence."""
    samples, rate = read_wav(path)
    return len(_active(samples, rate, threshold)) / rate


def dominant_frequency(path: Path | str, threshold: float = 0.01) -> float | None:
    """Frequency (Hz) of the strongest spectral peak over the non-silent part.

    Returns None when the recording is (nearly) all silence.
    """
    samples, rate = read_wav(path)
    active = _active(samples, rate, threshold)
    if len(active) < rate // 10:  # under 100 ms of signal
        return None
    active = active - active.mean()
    spectrum = np.abs(np.fft.rfft(active * np.hanning(len(active))))
    freqs = np.fft.rfftfreq(len(active), 1.0 / rate)
    spectrum[freqs < 50] = 0  # DC and hum
    k = int(np.argmax(spectrum))
    # Parabolic interpolation between bins for sub-bin accuracy.
    if 0 < k < len(spectrum) - 1:
        a, b, c = spectrum[k - 1], spectrum[k], spectrum[k + 1]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom else 0.0
        return float((k + offset) * rate / len(active))
    return float(freqs[k])
