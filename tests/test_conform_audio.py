"""Audio conform: real files in, outputs measured independently (pymediainfo, loudnorm, ffmpeg decode)."""

from __future__ import annotations

import gc
import logging
import math
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest
from audio_timing_media import voice_offset
from hypothesis import given, settings
from hypothesis import strategies as st
from loudness import r128_of, voice_layout
from media import decode_stats, make_audio, make_video, media_info
from sync_media import read_wav

from pipeline.errors import InputError, ValidationError
from pipeline.limits import load_limits
from pipeline.speech import write_wav
from pipeline.stages.conform_audio import (
    DEAD_CHANNEL_DB,
    AudioOptions,
    ChannelLevels,
    GainPass,
    LoudnessFigures,
    LoudnessTarget,
    execute_audio,
    next_gain,
    next_pass,
    plan_audio,
    plan_channel_pick,
    speech_warnings,
)
from pipeline.stages.probe import AudioStream, MediaProbe, probe

LIMITS = load_limits()


def conform(src: Path, dst: Path, limits=LIMITS, **opts):
    return execute_audio(plan_audio(probe(src), limits, AudioOptions(**opts)), dst)


def audio_track(path: Path):
    (track,) = media_info(path)["Audio"]
    return track


def test_quiet_51_at_96k_becomes_loud_stereo_48k_wav(tmp_path):
    src = make_audio(tmp_path / "surround 5.1.wav", seconds=4, rate=96000, channels=6, level_db=-38)
    result = conform(src, tmp_path / "out.wav")
    track = audio_track(result.path)
    assert (track.format, int(track.channel_s), int(track.sampling_rate), int(track.bit_depth)) == ("PCM", 2, 48000, 16)
    assert not media_info(result.path).get("Video")
    measured = r128_of(result.path)
    assert measured.integrated == pytest.approx(-16.0, abs=1.0)
    assert measured.true_peak <= -1.5 + 0.5
    source = r128_of(src)
    assert result.loudness.input_i == pytest.approx(source.integrated, abs=1.5)
    assert result.loudness.output_i == pytest.approx(-16.0, abs=1.0)
    assert decode_stats(result.path).audio_seconds == pytest.approx(4.0, abs=0.001)
    assert "downmixed from 6 channels to stereo" in result.plan.reasons


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_a_conform_leaves_no_file_open(tmp_path, fmt):
    """Every ffmpeg pipe and every file read is closed by the conform itself, not left to the garbage collector
    (which warns, and in a long batch runs out of descriptors)."""
    src = make_audio(tmp_path / "voice.wav", seconds=3, level_db=-30)
    limits = LIMITS if fmt == "wav" else load_limits(overrides={"audio_containers": ["mp3"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        plan = plan_audio(probe(src), limits, AudioOptions())
        result = execute_audio(plan, tmp_path / f"out.{fmt}", progress=lambda done: None)
        gc.collect()
    assert result.plan.format == fmt and result.speech is not None  # the voice was read back for its pauses
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_quiet_mono_dialogue_is_normalized_and_stays_mono(tmp_path):
    src = make_audio(tmp_path / "quiet dialogue.wav", seconds=3, rate=44100, channels=1, level_db=-42)
    result = conform(src, tmp_path / "voice.wav", loudness=LoudnessTarget(integrated=-20.0, true_peak=-1.0))
    assert int(audio_track(result.path).channel_s) == 1
    assert r128_of(result.path).integrated == pytest.approx(-20.0, abs=1.0)


def test_a_steady_level_is_normalized_linearly(tmp_path):
    src = make_audio(tmp_path / "tone.wav", seconds=3, speech=False, level_db=-30)
    result = conform(src, tmp_path / "out.wav")
    assert result.loudness.normalization_type == "linear" and not result.warnings
    assert result.loudness.gain_db == pytest.approx(-16.0 - result.loudness.input_i)
    assert r128_of(result.path).integrated == pytest.approx(-16.0, abs=1.0)


def test_a_quiet_track_with_loud_clicks_warns_that_its_peaks_were_limited(tmp_path):
    src = make_audio(tmp_path / "peaky.wav", seconds=4, level_db=-40)
    with wave.open(str(src), "rb") as w:
        params, samples = w.getparams(), np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()
    samples[::48000] = 32000  # a click every second: 24 dB of gain would put them far over the ceiling
    with wave.open(str(src), "wb") as w:
        w.setparams(params)
        w.writeframes(samples.tobytes())
    result = conform(src, tmp_path / "out.wav")
    assert not result.loudness.linear
    assert any("peaks limited by about" in w and "peaky.wav" in w for w in result.warnings)
    measured = r128_of(result.path)
    assert measured.integrated == pytest.approx(-16.0, abs=1.0)
    assert measured.true_peak <= -1.4


def test_ordinary_limiting_of_speech_is_not_a_warning(tmp_path):
    src = make_audio(tmp_path / "speech.wav", seconds=3, level_db=-30)  # crest ~16 dB: a few dB of limiting
    result = conform(src, tmp_path / "out.wav")
    assert not result.loudness.linear and not result.warnings


def test_mp3_with_cover_art_uses_only_the_sound(tmp_path):
    src = make_audio(tmp_path / "song ♪.mp3", seconds=3, channels=2, cover_art=True)
    assert media_info(src).get("Image") or media_info(src).get("Video")  # the cover is really there
    result = conform(src, tmp_path / "out.wav")
    assert not media_info(result.path).get("Video") and not media_info(result.path).get("Image")
    assert decode_stats(result.path).audio_seconds == pytest.approx(3.0, abs=0.06)


def test_the_sound_of_a_video_is_taken_with_start_and_end(tmp_path):
    voice = make_audio(tmp_path / "voice.wav", seconds=4)
    src = make_video(tmp_path / "clip.mp4", seconds=4, audio_file=voice)
    result = conform(src, tmp_path / "out.wav", start=1.0, end=2.5)
    assert decode_stats(result.path).audio_seconds == pytest.approx(1.5, abs=0.001)
    assert (result.plan.start, result.plan.take_seconds) == (1.0, 1.5)


def test_padding_to_the_video_length_appends_silence(tmp_path):
    src = make_audio(tmp_path / "short.wav", seconds=2)
    result = conform(src, tmp_path / "padded.wav", target_duration=3.25)
    assert decode_stats(result.path).audio_seconds == pytest.approx(3.25, abs=0.001)
    assert r128_of(result.path, start=2.3).integrated <= -69  # the tail is digital silence
    assert r128_of(result.path, duration=2.0).integrated == pytest.approx(-16.0, abs=1.5)


def test_over_the_limit_is_cut_with_a_warning_naming_the_cut(tmp_path):
    src = make_audio(tmp_path / "long.wav", seconds=5)
    limits = load_limits(overrides={"audio_max_seconds": 3.0})
    result = conform(src, tmp_path / "cut.wav", limits=limits)
    assert decode_stats(result.path).audio_seconds == pytest.approx(3.0, abs=0.001)
    assert any("cut at 3.000 s" in w and "3.000-5.000 s dropped" in w for w in result.warnings)


def test_mp3_when_wav_is_not_accepted(tmp_path):
    src = make_audio(tmp_path / "voice.wav", seconds=2, channels=2)
    limits = load_limits(overrides={"audio_containers": ["mp3"]})
    result = conform(src, tmp_path / "voice.mp3", limits=limits)
    track = audio_track(result.path)
    assert (track.format, int(track.sampling_rate)) == ("MPEG Audio", 48000)
    assert result.plan.bitrate_kbps == 192 and "WAV is not accepted" in result.plan.reasons[0]


@pytest.mark.parametrize("level_db, what", [(None, "silent"), (-60.0, "near-silent")])
def test_silent_and_near_silent_audio_is_rejected_and_nothing_is_left(tmp_path, level_db, what):
    src = tmp_path / "quiet.wav"
    # a steady -60 dBFS tone is a hum: quiet, and nothing in it stands over its own level
    make_audio(src, seconds=2, speech=False, level_db=-200 if level_db is None else level_db)
    with pytest.raises(InputError) as err:
        conform(src, tmp_path / "out" / "x.wav")
    assert err.value.exit_code == 6
    assert f"the audio is {what}" in str(err.value) and "quiet.wav" in str(err.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def _in_room_tone(path: Path, speech_db: float, noise_db: float) -> Path:
    """Speech-like dialogue at `speech_db` dBFS RMS over steady room noise at `noise_db` dBFS RMS (3 s)."""
    clean = make_audio(path.with_name("clean.wav"), seconds=3, level_db=speech_db)
    with wave.open(str(clean), "rb") as w:
        voice = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768
    noise = np.random.default_rng(5).normal(0, 10 ** (noise_db / 20), len(voice))
    write_wav(path, voice + noise, 48000)
    clean.unlink()
    return path


def test_clean_dialogue_recorded_far_too_quietly_is_normalized_with_a_warning(tmp_path):
    """About -57 LUFS, yet the words stand 40 dB over the room: loudness normalisation exists for it."""
    src = _in_room_tone(tmp_path / "far mic.wav", speech_db=-57.0, noise_db=-100.0)
    assert r128_of(src).integrated == pytest.approx(-57.0, abs=2.0)
    result = conform(src, tmp_path / "voice.wav")
    assert r128_of(result.path).integrated == pytest.approx(-16.0, abs=1.0)
    (warning,) = [w for w in result.warnings if "quiet voice" in w]
    assert "far mic.wav" in warning and "noise floor" in warning


@pytest.mark.parametrize(
    "build",
    [
        lambda d: _in_room_tone(d / "buried.wav", speech_db=-64.0, noise_db=-60.0),
        lambda d: _in_room_tone(d / "room.wav", speech_db=-200.0, noise_db=-58.0),
    ],
    ids=["speech buried in room noise", "room tone only"],
)
def test_quiet_sound_with_no_speech_over_its_noise_floor_is_refused(tmp_path, build):
    src = build(tmp_path)
    with pytest.raises(InputError) as err:
        conform(src, tmp_path / "out" / "x.wav")
    assert err.value.exit_code == 6 and "near-silent" in str(err.value) and "noise floor" in str(err.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_file_without_sound_is_refused(tmp_path):
    src = make_video(tmp_path / "mute.mp4", audio=False, seconds=1)
    with pytest.raises(InputError, match=r"mute.mp4: has no audio track"):
        plan_audio(probe(src), LIMITS)


# ---- the planner on its own ---------------------------------------------------------------------


def fake_probe(seconds: float, channels: int = 2, rate: int = 48000, start: float = 0.0) -> MediaProbe:
    stream = AudioStream(codec="PCM", channels=channels, sample_rate=rate, duration=seconds, bit_depth=16, start=start)
    return MediaProbe(Path("in.wav"), "wav", seconds, 1000, None, stream)


@settings(max_examples=200, deadline=None)
@given(
    seconds=st.floats(0.5, 200),
    start=st.one_of(st.none(), st.floats(0, 10)),
    length=st.one_of(st.none(), st.floats(0.1, 100)),
    target=st.one_of(st.none(), st.floats(0.1, 100)),
    max_seconds=st.floats(1, 120),
    max_bytes=st.integers(200_000, 60_000_000),
    channels=st.sampled_from([1, 2, 6, 8]),
    containers=st.sampled_from([("wav", "mp3"), ("mp3",), ("wav",)]),
)
def test_plans_fit_every_limit(seconds, start, length, target, max_seconds, max_bytes, channels, containers):
    limits = load_limits(
        overrides={"audio_max_seconds": max_seconds, "audio_max_bytes": max_bytes, "audio_containers": list(containers)}
    )
    end = None if length is None or start is None else start + length
    try:
        plan = plan_audio(
            fake_probe(seconds, channels), limits, AudioOptions(start=start, end=end, target_duration=target)
        )
    except (InputError, ValidationError) as err:
        assert err.exit_code == 6
        assert (start or 0) >= seconds or "cannot fit" in str(err) or "WAV would be" in str(err)
        return
    assert 0 < plan.duration <= max_seconds + 1e-9
    assert plan.format in containers and plan.estimated_bytes <= max_bytes
    assert plan.channels == (1 if channels == 1 else 2)
    assert plan.start + plan.take_seconds <= seconds + 1e-9
    if target is not None and target <= max_seconds:
        assert plan.duration == pytest.approx(target)
    if plan.take_seconds < min(seconds - plan.start, (end or seconds) - plan.start, target or 1e9) - 1e-9:
        assert plan.warnings


def test_a_clip_shorter_than_one_loudness_block_is_not_mistaken_for_silence(tmp_path):
    src = make_audio(tmp_path / "blip.wav", seconds=0.3)
    result = conform(src, tmp_path / "out.wav")
    assert result.loudness.input_i > -30
    assert decode_stats(result.path).audio_seconds == pytest.approx(0.3, abs=0.001)


def test_limited_passes_follow_the_measured_slope():
    target = LoudnessTarget(integrated=-16.0)
    assert next_gain([(5.0, -16.3)], target) is None
    assert next_gain([(4.0, -17.5)], target) == pytest.approx(5.5)
    # 1.5 dB more gain bought only 0.5 LU: the next step is three times the miss
    assert next_gain([(4.0, -17.5), (5.5, -17.0)], target) == pytest.approx(8.5)
    # 6 dB more bought 0.1 LU: the loudness sits in a click, more gain would only raise the room tone
    assert next_gain([(6.0, -22.0), (12.0, -21.9)], target) is None


def _out(output_i: float, output_tp: float) -> LoudnessFigures:
    return LoudnessFigures(-30.0, -10.0, 1.0, -40.0, output_i=output_i, output_tp=output_tp)


def test_a_true_peak_over_the_ceiling_lowers_the_limiter_by_the_overshoot():
    target = LoudnessTarget(integrated=-16.0, true_peak=-1.5)
    linear = GainPass("linear", 3.0, -1.8)
    assert next_pass([linear], [_out(-16.0, -1.6)], target) is None
    # an MP3 encoder's ringing put a linear gain 0.4 dB over: limit 0.5 dB lower, same gain
    assert next_pass([linear], [_out(-16.0, -1.1)], target) == GainPass("limited", 3.0, pytest.approx(-2.3))
    limited = GainPass("limited", 14.0, -1.8)
    assert next_pass([limited], [_out(-16.2, -1.6)], target) is None
    assert next_pass([limited], [_out(-17.0, -1.6)], target) == GainPass("limited", 15.0, -1.8)


def test_makeup_gain_is_capped():
    target = LoudnessTarget(integrated=-16.0, true_peak=-1.5)
    first = GainPass("limited", 6.0, -1.8)
    done = [first, GainPass("limited", 20.0, -1.8)]
    outputs = [_out(-40.0, -1.8), _out(-30.0, -1.8)]
    assert next_pass(done, outputs, target).gain_db == pytest.approx(26.0)  # 6 + MAX_MAKEUP_DB, not 34
    assert next_pass([*done, GainPass("limited", 26.0, -1.8)], [*outputs, _out(-28.0, -1.8)], target) is None


# ---- speech activity (pydub) --------------------------------------------------------------------

SPAN_TOLERANCE_S = 0.2  # a synthetic syllable's fade-in/out and a trailing word gap


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_speech_spans_are_found_where_the_voice_speaks(tmp_path, fmt):
    src = voice_layout(
        tmp_path / "late.wav", [("silence", 2.0), ("speech", 3.0), ("silence", 1.0), ("speech", 2.0), ("silence", 0.5)]
    )
    limits = load_limits(overrides={"audio_containers": [fmt]})
    result = conform(src, tmp_path / f"out.{fmt}", limits=limits)
    speech = result.speech
    assert speech.seconds == pytest.approx(8.5, abs=0.03)
    assert len(speech.spans) == 2
    for found, wanted in zip(speech.spans, [(2.0, 5.0), (6.0, 8.0)], strict=True):
        assert found == pytest.approx(wanted, abs=SPAN_TOLERANCE_S)
    assert speech.ratio == pytest.approx(5.0 / 8.5, abs=0.05)
    assert any("starts after 2.0 s of silence" in w and "late.wav" in w for w in result.warnings)
    assert not any("mostly silence" in w for w in result.warnings)
    assert result.to_dict()["speech"]["leading_silence"] == pytest.approx(2.0, abs=SPAN_TOLERANCE_S)


def test_a_voice_that_is_mostly_silence_is_warned_about(tmp_path):
    src = voice_layout(tmp_path / "sparse.wav", [("speech", 0.8), ("silence", 5.0), ("speech", 0.4), ("silence", 2.0)])
    result = conform(src, tmp_path / "out.wav")
    assert result.speech.ratio < 0.2
    assert any("mostly silence" in w and "sparse.wav" in w for w in result.warnings)
    assert not any("starts after" in w for w in result.warnings)


def test_padding_to_the_video_counts_as_trailing_silence(tmp_path):
    src = voice_layout(tmp_path / "line.wav", [("speech", 2.0)])
    result = conform(src, tmp_path / "out.wav", target_duration=3.0)
    assert result.speech.trailing_silence == pytest.approx(1.0, abs=SPAN_TOLERANCE_S)
    assert result.speech.ratio == pytest.approx(2 / 3, abs=0.07)
    assert speech_warnings(result.speech, "line.wav") == []


def test_a_voice_pydub_cannot_read_costs_the_analysis_not_the_job(tmp_path, monkeypatch, caplog):
    from pydub import AudioSegment

    src = voice_layout(tmp_path / "line.wav", [("speech", 1.0)])
    limits = load_limits(overrides={"audio_containers": ["mp3"]})
    monkeypatch.setattr(AudioSegment, "converter", str(tmp_path / "no-such-ffmpeg"))
    monkeypatch.setattr("pipeline.stages.conform_audio.ffmpeg_exe", lambda: str(tmp_path / "no-such-ffmpeg"))
    logger = logging.getLogger("lipsync.conform_audio")  # the CLI's setup may stop propagation to the root
    logger.addHandler(caplog.handler)
    try:
        result = conform(src, tmp_path / "out.mp3", limits=limits)
    finally:
        logger.removeHandler(caplog.handler)
    assert result.speech is None and result.to_dict()["speech"] is None
    assert r128_of(result.path).integrated == pytest.approx(-16.0, abs=1.0)
    assert any("could not analyse where the voice speaks" in r.getMessage() for r in caplog.records)


@settings(max_examples=200, deadline=None)
@given(
    sound_start=st.floats(0, 5),
    seconds=st.floats(0.5, 20),
    start=st.floats(0, 10),
    target=st.one_of(st.none(), st.floats(0.1, 30)),
)
def test_a_sound_that_starts_late_is_led_by_exactly_the_silence_before_it(sound_start, seconds, start, target):
    p = fake_probe(seconds, start=sound_start)
    if start >= sound_start + seconds:
        with pytest.raises(InputError, match="nothing to use"):
            plan_audio(p, LIMITS, AudioOptions(start=start, target_duration=target))
        return
    plan = plan_audio(p, LIMITS, AudioOptions(start=start, target_duration=target))
    assert plan.lead_seconds == pytest.approx(min(plan.take_seconds, max(0.0, sound_start - start)))
    assert plan.start + plan.take_seconds <= sound_start + seconds + 1e-9  # the range is on the file's timeline
    assert bool(plan.lead_seconds) == any("silence before it" in r for r in plan.reasons)


def test_limiting_does_not_move_the_voice(tmp_path):
    """alimiter's look-ahead delays its output by its attack unless told to compensate (5 ms, an eighth of
    a frame at 25 fps, added to every limited voice)."""
    src = voice_layout(tmp_path / "peaky.wav", [("speech", 2.0)])
    samples, rate = read_wav(src)
    samples[rate // 2 : rate // 2 + 48] += 0.9  # one click: the gain to -16 LUFS needs the limiter
    write_wav(src, samples, rate)
    result = conform(src, tmp_path / "out.wav")
    assert result.loudness.normalization_type == "limited"
    assert voice_offset(src, result.path)[0] == pytest.approx(0, abs=0.0002)


levels_db = st.one_of(st.floats(-120, 0), st.just(-math.inf))


@settings(max_examples=300, deadline=None)
@given(
    left=levels_db,
    right=levels_db,
    mid_under=st.one_of(st.floats(-6.1, 60), st.just(math.inf)),
    channels=st.sampled_from([1, 2]),
)
def test_the_channel_pick_uses_one_channel_only_when_the_other_is_dead_or_cancels_it(left, right, mid_under, channels):
    loud = max(left, right)
    levels = ChannelLevels(left, right, loud - mid_under, loud)
    pick, reason = plan_channel_pick(levels, channels)
    dead = loud - min(left, right) > DEAD_CHANNEL_DB
    cancels = loud - levels.mid_db > DEAD_CHANNEL_DB
    assert (pick is not None) == (dead or cancels) and (reason is None) == (pick is None)
    if dead:
        assert (left, right)[pick] == loud and "dead" in reason
    elif cancels:
        assert pick == 0 and "phase-inverted" in reason
    if reason:
        assert ("on both output channels" in reason) == (channels == 2) and "inf" not in reason
    assert plan_channel_pick(None, channels) == (None, None)
