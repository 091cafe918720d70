"""G.711 PCMU (μ-law) and PCMA (A-law) codecs, vectorised with lookup tables.

ITU-T G.711 defines the companding on 14-bit (μ-law) and 13-bit (A-law) linear samples; we take
int16 PCM and drop the low bits exactly as the recommendation's reference encoders do. Both
directions are pure table lookups: a 65536-entry encode table indexed by the int16 sample
reinterpreted as uint16, and a 256-entry decode table indexed by the code byte. Building the
tables once at import costs ~1 ms and makes every frame a single numpy fancy-index.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PAYLOAD_TYPE_PCMA",
    "PAYLOAD_TYPE_PCMU",
    "alaw_decode",
    "alaw_encode",
    "decode",
    "encode",
    "silence_payload",
    "ulaw_decode",
    "ulaw_encode",
]

# RFC 3551 §6 table 4: static payload types.
PAYLOAD_TYPE_PCMU = 0
PAYLOAD_TYPE_PCMA = 8

_ULAW_BIAS = 0x21  # 33: μ-law bias in 14-bit scale (132 in 16-bit scale, 0x84 below)
_ULAW_CLIP = 8159  # largest 14-bit magnitude that still fits segment 7 once the bias is added


def _build_ulaw_encode() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    # G.711 μ-law is specified on 14-bit samples: arithmetic shift first, then take magnitude,
    # so negative values round toward -inf exactly like the reference encoder.
    pcm14 = pcm >> 2
    sign = np.where(pcm14 < 0, 0x80, 0x00)
    mag = np.minimum(np.abs(pcm14), _ULAW_CLIP) + _ULAW_BIAS
    # Segment (exponent) = position of the highest set bit above bit 5, 0..7.
    exponent = np.clip(np.floor(np.log2(mag)).astype(np.int32) - 5, 0, 7)
    mantissa = (mag >> (exponent + 1)) & 0x0F
    # Overload (magnitude past segment 7) saturates to the largest code.
    mantissa = np.where(mag > 0x1FFF, 0x0F, mantissa)
    code = ~(sign | (exponent << 4) | mantissa) & 0xFF
    table = np.empty(65536, dtype=np.uint8)
    # Index by the uint16 view of the sample so lookups need no offset arithmetic.
    table[pcm.astype(np.int16).view(np.uint16)] = code.astype(np.uint8)
    return table


def _build_ulaw_decode() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(code & 0x80, -mag, mag).astype(np.int16)


def _build_alaw_encode() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    # A-law works on 13 bits; negative values use one's-complement-like magnitude (-x - 1).
    sign = np.where(pcm >= 0, 0x80, 0x00)
    mag = np.where(pcm >= 0, pcm, -pcm - 1) >> 3
    exponent = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent < 2, mag >> 1, mag >> exponent) & 0x0F
    # Overload: everything beyond segment 7 saturates to the largest code.
    mantissa = np.where(mag > 0xFFF, 0x0F, mantissa)
    # G.711 §A: even bits are inverted on the line (XOR 0x55).
    code = (sign | (exponent << 4) | mantissa) ^ 0x55
    table = np.empty(65536, dtype=np.uint8)
    table[pcm.astype(np.int16).view(np.uint16)] = code.astype(np.uint8)
    return table


def _build_alaw_decode() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    # Reconstruct at the middle of the quantisation interval (+0x08 / +0x108).
    mag = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(code & 0x80, mag, -mag).astype(np.int16)


_ULAW_ENC = _build_ulaw_encode()
_ULAW_DEC = _build_ulaw_decode()
_ALAW_ENC = _build_alaw_encode()
_ALAW_DEC = _build_alaw_decode()


def _as_uint16_index(pcm: np.ndarray) -> np.ndarray:
    samples = np.asarray(pcm)
    if samples.dtype != np.int16:
        # Saturate rather than wrap: a float or int32 mix bus may exceed int16.
        samples = np.clip(samples, -32768, 32767).astype(np.int16)
    return samples.view(np.uint16)


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """Encode int16 PCM samples to PCMU bytes (one byte per sample)."""
    return bytes(_ULAW_ENC[_as_uint16_index(pcm)].tobytes())


def ulaw_decode(data: bytes) -> np.ndarray:
    """Decode PCMU bytes to int16 PCM samples."""
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: np.ndarray) -> bytes:
    """Encode int16 PCM samples to PCMA bytes (one byte per sample)."""
    return bytes(_ALAW_ENC[_as_uint16_index(pcm)].tobytes())


def alaw_decode(data: bytes) -> np.ndarray:
    """Decode PCMA bytes to int16 PCM samples."""
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def encode(pcm: np.ndarray, payload_type: int) -> bytes:
    """Encode with the codec named by its static RTP payload type (0 = PCMU, 8 = PCMA)."""
    if payload_type == PAYLOAD_TYPE_PCMU:
        return ulaw_encode(pcm)
    if payload_type == PAYLOAD_TYPE_PCMA:
        return alaw_encode(pcm)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


def decode(data: bytes, payload_type: int) -> np.ndarray:
    """Decode with the codec named by its static RTP payload type (0 = PCMU, 8 = PCMA)."""
    if payload_type == PAYLOAD_TYPE_PCMU:
        return ulaw_decode(data)
    if payload_type == PAYLOAD_TYPE_PCMA:
        return alaw_decode(data)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


# Digital silence codes: what a zero sample encodes to (used for comfort/concealment frames).
_SILENCE = {PAYLOAD_TYPE_PCMU: int(_ULAW_ENC[0]), PAYLOAD_TYPE_PCMA: int(_ALAW_ENC[0])}


def silence_payload(payload_type: int, samples: int = 160) -> bytes:
    """A payload of `samples` silent samples for the given G.711 payload type."""
    try:
        return bytes([_SILENCE[payload_type]]) * samples
    except KeyError:
        raise ValueError(f"not a G.711 payload type: {payload_type}") from None


def _law_table(src: int, dst: int) -> bytes:
    codes = bytes(range(256))
    return encode(decode(codes, src), dst)


_TRANSLATE = {
    (PAYLOAD_TYPE_PCMU, PAYLOAD_TYPE_PCMA): _law_table(PAYLOAD_TYPE_PCMU, PAYLOAD_TYPE_PCMA),
    (PAYLOAD_TYPE_PCMA, PAYLOAD_TYPE_PCMU): _law_table(PAYLOAD_TYPE_PCMA, PAYLOAD_TYPE_PCMU),
}


def convert(payload: bytes, src: int, dst: int) -> bytes:
    """One G.711 law to the other, byte for byte through a 256-entry table (G.711 §A/§B
    conversion); the same law passes untouched."""
    if src == dst:
        return payload
    return payload.translate(_TRANSLATE[(src, dst)])
