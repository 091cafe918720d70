import warnings

import numpy as np
import pytest

from phone.media import g711

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
CODECS = [
    pytest.param(g711.ulaw_encode, g711.ulaw_decode, id="pcmu"),
    pytest.param(g711.alaw_encode, g711.alaw_decode, id="pcma"),
]


@pytest.mark.parametrize(("enc", "dec"), CODECS)
def test_it_encodes_one_byte_per_sample_and_decodes_to_int16(enc, dec):
    data = enc(np.zeros(160, dtype=np.int16))
    assert isinstance(data, bytes)
    assert len(data) == 160
    out = dec(data)
    assert out.dtype == np.int16
    assert out.shape == (160,)
    # μ-law has an exact zero; A-law has no zero code and decodes silence to ±8.
    assert np.abs(out).max() <= 8


@pytest.mark.parametrize(("enc", "dec"), CODECS)
def test_it_round_trips_every_sample_within_half_a_quantisation_step(enc, dec):
    out = dec(enc(ALL_PCM)).astype(np.int32)
    err = np.abs(out - ALL_PCM.astype(np.int32))
    mag = np.abs(ALL_PCM.astype(np.int32))
    # Logarithmic companding: the error grows with magnitude (half a step is at most ~1/20 of
    # the value) above a fixed floor in the first segments.
    assert np.all(err <= np.maximum(mag // 16, 16))
    # Small signals are nearly exact.
    assert err[mag < 64].max() <= 8


@pytest.mark.parametrize(("enc", "dec"), CODECS)
def test_it_is_idempotent_on_decoded_values(enc, dec):
    codes = bytes(range(256))
    decoded = dec(codes)
    assert dec(enc(decoded)).tolist() == decoded.tolist()


@pytest.mark.parametrize(("enc", "dec"), CODECS)
def test_it_keeps_a_sine_at_telephone_quality_snr(enc, dec):
    t = np.arange(8000) / 8000
    pcm = (10000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    out = dec(enc(pcm)).astype(np.float64)
    noise = out - pcm
    snr = 10 * np.log10(np.sum(pcm.astype(np.float64) ** 2) / np.sum(noise**2))
    assert snr > 35  # G.711 gives ~38 dB SNR on a mid-level tone


def test_it_matches_the_reference_encoder_bit_for_bit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    raw = ALL_PCM.tobytes()
    codes = bytes(range(256))
    assert g711.ulaw_encode(ALL_PCM) == audioop.lin2ulaw(raw, 2)
    assert g711.alaw_encode(ALL_PCM) == audioop.lin2alaw(raw, 2)
    assert g711.ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


def test_it_knows_the_well_known_codes():
    # Zero is 0xFF in μ-law and 0xD5 in A-law on the wire.
    assert g711.silence_payload(g711.PAYLOAD_TYPE_PCMU, 2) == b"\xff\xff"
    assert g711.silence_payload(g711.PAYLOAD_TYPE_PCMA, 2) == b"\xd5\xd5"
    assert g711.ulaw_encode(np.array([32767, -32768], dtype=np.int16)) == b"\x80\x00"
    assert g711.alaw_encode(np.array([32767, -32768], dtype=np.int16)) == b"\xaa\x2a"


def test_it_saturates_non_int16_input_instead_of_wrapping():
    loud = np.array([40000.0, -40000.0])
    assert g711.ulaw_encode(loud) == g711.ulaw_encode(np.array([32767, -32768], dtype=np.int16))


def test_it_dispatches_by_payload_type():
    pcm = np.array([0, 1000, -1000], dtype=np.int16)
    assert g711.encode(pcm, 0) == g711.ulaw_encode(pcm)
    assert g711.encode(pcm, 8) == g711.alaw_encode(pcm)
    assert g711.decode(b"\x00", 8).tolist() == g711.alaw_decode(b"\x00").tolist()
    with pytest.raises(ValueError):
        g711.encode(pcm, 9)
    with pytest.raises(ValueError):
        g711.silence_payload(18)
