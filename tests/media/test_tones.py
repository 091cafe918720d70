import wave

import numpy as np
import pytest

from phone.media import tones
from tests.support import analysis


def test_a_sine_tone_has_its_frequency_and_level():
    src = tones.SineTone(1000, level=0.5)
    frame = src.next_frame()
    assert frame.dtype == np.int16 and frame.shape == (160,)
    pcm = np.concatenate([frame, *src.frames(49)])
    assert analysis.dominant_frequency(pcm) == pytest.approx(1000, abs=0.5)
    assert np.abs(pcm).max() == pytest.approx(0.5 * 32767, rel=0.01)


@pytest.mark.parametrize("freq", [700, 1000, 440.5])
def test_frames_join_without_a_phase_jump(freq):
    # Frame by frame must equal one long render: no discontinuity at frame borders.
    a = tones.SineTone(freq)
    b = tones.SineTone(freq)
    framed = np.concatenate(list(a.frames(25)))
    assert np.array_equal(framed, b.render(0.5))
    # And the largest sample-to-sample step is the one a continuous sine allows.
    step = np.abs(np.diff(framed.astype(np.int32))).max()
    assert step <= 2 * np.pi * freq / 8000 * 0.3 * 32767 + 2


def _on_off(pcm, frame=160):
    rms = np.sqrt(np.mean(pcm.astype(np.float64).reshape(-1, frame) ** 2, axis=1))
    return rms > 1000


def test_japanese_ringback_is_400hz_modulated_by_16hz_one_second_on_two_off():
    pcm = tones.JapaneseRingback().render(6.0)
    on = _on_off(pcm)
    # 50 frames on, 100 frames off, twice (the edges fall in the 4 ms ramps).
    assert on[:50].all() and not on[51:150].any() and on[150:200].all() and not on[201:].any()
    burst = pcm[:8000]
    assert analysis.dominant_frequency(burst) == pytest.approx(400, abs=20)
    # AM by 16 Hz puts sidebands at 384 and 416 Hz next to the 400 Hz carrier.
    assert analysis.goertzel_power(burst, 400) > 0.4
    assert analysis.goertzel_power(burst, 416) > 0.05
    assert analysis.goertzel_power(burst, 384) > 0.05
    envelope = np.abs(burst.astype(np.float64)).reshape(-1, 50).max(axis=1)  # 160 Hz envelope
    assert analysis.dominant_frequency(envelope - envelope.mean(), rate=160, min_hz=5) == (
        pytest.approx(16, abs=1)
    )


def test_japanese_busy_is_400hz_half_second_on_half_off():
    pcm = tones.JapaneseBusy().render(2.0)
    on = _on_off(pcm)
    assert on[:25].all() and not on[26:50].any() and on[50:75].all() and not on[76:100].any()
    assert analysis.dominant_frequency(pcm[:4000]) == pytest.approx(400, abs=1)
    assert analysis.has_tone(pcm[:4000], 400)


def test_incoming_ring_is_a_cadenced_two_tone_trill():
    pcm = tones.IncomingRing().render(3.0)
    on = _on_off(pcm)
    assert on[:50].all() and not on[51:].any()
    assert analysis.goertzel_power(pcm[:8000], 1000) > 0.2
    assert analysis.goertzel_power(pcm[:8000], 1300) > 0.2


def test_music_on_hold_loops_seamlessly_and_is_not_silent_or_clipped():
    moh = tones.MusicOnHold()
    loop = int(moh.loop_seconds * 8000)
    pcm = moh.render(2 * moh.loop_seconds + 0.5)
    assert np.array_equal(pcm[:loop], pcm[loop : 2 * loop])
    assert 3 < moh.loop_seconds < 15
    assert analysis.rms_dbfs(pcm) > -30
    assert np.abs(pcm.astype(np.int32)).max() < 32767
    # No clicks: the largest step stays well below what a hard edge would produce.
    assert np.abs(np.diff(pcm.astype(np.int32))).max() < 8000


def test_tone_sources_validate_their_parameters():
    with pytest.raises(ValueError):
        tones.SineTone(5000)
    with pytest.raises(ValueError):
        tones.SineTone(1000, level=2)


def test_dominant_frequency_is_accurate_between_bins():
    t = np.arange(1600) / 8000  # 200 ms: 5 Hz bins
    for f in (697.0, 941.3, 1633.0):
        x = np.sin(2 * np.pi * f * t) * 8000
        assert analysis.dominant_frequency(x) == pytest.approx(f, abs=1.0)


def test_goertzel_separates_close_tones_and_rejects_noise():
    rng = np.random.default_rng(1)
    t = np.arange(8000) / 8000
    tone = 8000 * np.sin(2 * np.pi * 1000 * t)
    assert analysis.goertzel_power(tone, 1000) == pytest.approx(1.0, abs=0.01)
    assert analysis.goertzel_power(tone, 700) < 0.01
    noise = rng.normal(0, 3000, 8000)
    assert not analysis.has_tone(noise, 1000)
    assert analysis.has_tone(tone + noise * 0.3, 1000)
    assert analysis.goertzel_power(np.zeros(100), 1000) == 0.0


def _write_wav(path, pcm, rate=8000, channels=1, width=2):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def test_wav_dominant_frequency_ignores_leading_and_trailing_silence(tmp_path):
    tone = tones.SineTone(700, rate=16000).render(0.5)
    pcm = np.concatenate([np.zeros(16000, np.int16), tone, np.zeros(8000, np.int16)])
    stereo = np.stack([pcm, np.zeros_like(pcm)], axis=1)  # e.g. a recorder writing L/R
    _write_wav(tmp_path / "rec.wav", stereo, rate=16000, channels=2)
    assert analysis.wav_dominant_frequency(tmp_path / "rec.wav") == pytest.approx(700, abs=2)
    _write_wav(tmp_path / "silent.wav", np.zeros(8000, np.int16))
    assert analysis.wav_dominant_frequency(tmp_path / "silent.wav") is None


def test_read_wav_handles_8_and_32_bit(tmp_path):
    tone = tones.SineTone(1000, level=0.5).render(0.2)
    _write_wav(tmp_path / "a.wav", ((tone >> 8) + 128).astype(np.uint8), width=1)
    _write_wav(tmp_path / "b.wav", tone.astype(np.int32) << 16, width=4)
    for name in ("a.wav", "b.wav"):
        pcm, rate = analysis.read_wav(tmp_path / name)
        assert rate == 8000 and pcm.dtype == np.int16
        assert analysis.dominant_frequency(pcm) == pytest.approx(1000, abs=2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: tones.MusicOnHold(),
        lambda: tones.JapaneseRingback(),
        lambda: tones.JapaneseBusy(),
        lambda: tones.IncomingRing(),
        lambda: tones.SineTone(700),
        lambda: tones.SineTone(440.5),  # not periodic in whole samples: encoded per frame
    ],
)
@pytest.mark.parametrize("law", [0, 8])
def test_g711_payloads_are_the_encoded_frames_across_the_loop_seam(make, law):
    from phone.media import g711

    sliced, framed = make(), make()
    period = sliced.period or 8000
    # Start just before the seam so frames straddle it, then run past it twice.
    sliced.skip(period - 70)
    framed.skip(period - 70)
    for _ in range(2 * period // 160 + 3):
        assert sliced.next_payload(law) == g711.encode(framed.next_frame(), law)
    assert sliced.position == framed.position
