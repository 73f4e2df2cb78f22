from __future__ import annotations

import ffmpeg
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from media import make_audio, make_video
from sync_media import provider_result, shift, shifted_wav

from pipeline.errors import ToolError
from pipeline.ffmpeg import compile_stream, run_ffmpeg
from pipeline.speech import speak_to_wav, synth_speech
from pipeline.stages.avsync import decode_pcm, fft_length, measure_offset, measure_offset_samples

RATE = 16000


@pytest.mark.parametrize("delay_s", [0.0, 0.02, -0.02, 0.04, 0.1])
def test_known_delay_on_speech_is_measured_to_the_sample(delay_s):
    speech = synth_speech(5.0, sample_rate=RATE, seed=3).astype(np.float64)
    noisy = 0.6 * shift(speech, round(delay_s * RATE)) + np.random.default_rng(1).normal(0, 0.005, len(speech))
    m = measure_offset_samples(speech, noisy, RATE)
    assert m.seconds == pytest.approx(delay_s, abs=1 / RATE)
    assert m.correlation > 0.9 and m.reliable


@settings(max_examples=30, deadline=None)
@given(lag=st.integers(-1500, 1500), seed=st.integers(0, 1000), reference_s=st.floats(2.0, 4.0))
def test_any_lag_within_range_is_found_exactly(lag, seed, reference_s):
    rate = 8000
    noise = np.random.default_rng(seed).normal(0, 1, 4 * rate)
    reference = noise[: round(reference_s * rate)]  # a master shorter than the result, or as long
    m = measure_offset_samples(reference, shift(noise, lag), rate, max_lag_s=0.25)
    assert round(m.seconds * rate) == lag


@given(st.integers(1, 5000))
def test_the_fft_length_is_the_smallest_5_smooth_length_that_fits(n):
    def smooth(k: int) -> bool:
        for prime in (2, 3, 5):
            while k % prime == 0:
                k //= prime
        return k == 1

    length = fft_length(n)
    assert length >= n and smooth(length)
    assert not any(smooth(k) for k in range(n, length))


def test_unrelated_audio_is_not_reliable():
    a = synth_speech(5.0, sample_rate=RATE, seed=1).astype(np.float64)
    b = synth_speech(5.0, sample_rate=RATE, seed=2, f0=190).astype(np.float64)
    assert not measure_offset_samples(a, b, RATE).reliable
    assert not measure_offset_samples(a, np.zeros_like(a), RATE).reliable


@pytest.mark.parametrize("delay_s", [0.04, -0.02])
def test_offset_survives_a_lossy_aac_reencode_in_an_mp4(tmp_path, delay_s):
    master = make_audio(tmp_path / "master.wav", seconds=4.0, rate=48000, seed=5)
    result = provider_result(tmp_path / "result.mp4", master, delay_s=delay_s, seconds=4.0)
    m = measure_offset(master, result)
    assert m.seconds == pytest.approx(delay_s, abs=0.001)
    assert m.correlation > 0.8


def test_offset_on_real_tts_speech(tmp_path):
    master = speak_to_wav(
        "The quick brown fox jumps over the lazy dog, twice, slowly and clearly.", tmp_path / "speech.wav"
    )
    later = shifted_wav(master, tmp_path / "later.wav", 0.1)
    m = measure_offset(master, later)
    assert m.seconds == pytest.approx(0.1, abs=0.001)
    assert m.reliable


def test_decode_keeps_the_files_timeline_when_audio_starts_late(tmp_path):
    """Audio that starts 0.5 s into the file decodes with 0.5 s of leading silence, not from its first packet."""
    src = make_video(tmp_path / "plain.mp4", seconds=2.0, audio=True)
    late = tmp_path / "late.mp4"
    v = ffmpeg.input(str(src)).video
    a = ffmpeg.input(str(src), itsoffset=0.5).audio
    run_ffmpeg(compile_stream(ffmpeg.output(v, a, str(late), c="copy")), what="late audio")
    pcm = decode_pcm(late, sample_rate=RATE)
    lead = pcm[: int(0.45 * RATE)]
    assert np.max(np.abs(lead)) < 1e-4
    tone = pcm[int(0.6 * RATE) : int(1.5 * RATE)]
    assert np.sqrt(np.mean(tone**2)) > 0.05  # the 440 Hz tone (lavfi sine, amplitude 1/8)


def test_decode_of_a_file_without_audio_raises_a_tool_error_naming_it(tmp_path):
    silent = make_video(tmp_path / "silent.mp4", seconds=1.0, audio=False)
    with pytest.raises(ToolError, match=r"silent.mp4"):
        decode_pcm(silent)


def test_speech_after_a_long_silent_intro_is_still_found():
    """The voice only starts 25 s into a 30 s clip: the compared window must move to where the sound is."""
    speech = np.concatenate([np.zeros(25 * RATE), synth_speech(5.0, sample_rate=RATE, seed=8).astype(np.float64)])
    m = measure_offset_samples(speech, shift(speech, round(0.04 * RATE)), RATE)
    assert m.seconds == pytest.approx(0.04, abs=1 / RATE) and m.reliable
