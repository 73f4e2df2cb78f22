from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from media import decode_stats, make_audio, make_video, media_info, mp4_boxes, truncate_copy
from sync_media import first_frame_time, provider_result, read_wav

from pipeline.errors import VerificationError
from pipeline.ffmpeg import compile_stream, ffmpeg_exe, run_ffmpeg
from pipeline.speech import write_wav
from pipeline.stages.avsync import OffsetMeasurement, decode_pcm, measure_offset
from pipeline.stages.mux import (
    MuxResult,
    SegmentSound,
    StitchPlan,
    VideoTiming,
    join_results,
    mux,
    plan_mux,
    plan_stitch,
    stitch,
    video_timing,
)
from pipeline.stages.probe import AudioStream, MediaProbe, VideoStream

FPS = 25
RATE = 48000


def _stream_md5(path: Path, stream: str) -> str:
    """MD5 of one stream's packets, copied out without decoding: equal means untouched."""
    argv = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", stream, "-c", "copy", "-f", "md5", "-"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def _high_band_share(samples: np.ndarray, rate: int, cutoff: float = 4500.0) -> float:
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[freqs > cutoff].sum() / spectrum.sum())


def _lowpassed(src: Path, dst: Path, cutoff: float = 3500.0) -> Path:
    samples, rate = read_wav(src)
    spectrum = np.fft.rfft(samples)
    spectrum[np.fft.rfftfreq(len(samples), 1 / rate) > cutoff] = 0
    write_wav(dst, np.fft.irfft(spectrum, len(samples)), rate)
    return dst


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    return make_audio(tmp_path_factory.mktemp("master") / "master.wav", seconds=3.0, rate=RATE, seed=21)


@pytest.mark.parametrize("delay_s", [0.04, -0.02])
def test_final_has_the_providers_video_untouched_and_our_master_aligned(tmp_path, master, delay_s):
    # the provider's audio: band-limited like a lossy re-encode, so we can tell whose audio the final carries
    dull = _lowpassed(master, tmp_path / "dull.wav")
    provider = provider_result(
        tmp_path / "provider.mp4", dull, delay_s=delay_s, seconds=3.0, fps=FPS, width=320, height=176
    )
    result = mux(provider, master, tmp_path / "job" / "final.mp4")
    final = result.path

    assert _stream_md5(final, "0:v:0") == _stream_md5(provider, "0:v:0")
    info = media_info(final)
    assert info["Audio"][0].format == "AAC" and int(info["Audio"][0].sampling_rate) == RATE
    assert result.offset_s == pytest.approx(delay_s, abs=0.001)
    # lined up with the provider's audio (what the lips follow), to well under a frame
    assert measure_offset(provider, final).seconds == pytest.approx(0.0, abs=0.002)
    # and it is our master's full-band sound, not the provider's band-limited copy
    ours = decode_pcm(final, sample_rate=RATE)
    theirs = decode_pcm(provider, sample_rate=RATE)
    master_pcm, _ = read_wav(master)
    assert _high_band_share(ours, RATE) > 0.5 * _high_band_share(master_pcm, RATE)
    assert _high_band_share(theirs, RATE) < 0.01 * _high_band_share(master_pcm, RATE)
    stats = decode_stats(final)
    assert abs(stats.audio_seconds - stats.video_seconds) <= 1 / FPS
    assert first_frame_time(final, "v") == first_frame_time(provider, "v") == 0.0
    assert abs(first_frame_time(final, "a")) < 0.001


def test_the_finals_aac_is_a_faithful_copy_of_the_master(tmp_path, master):
    provider = provider_result(tmp_path / "provider.mp4", master, delay_s=0.0, seconds=3.0, fps=FPS)
    final = mux(provider, master, tmp_path / "final.mp4").path
    ours, (src, _) = decode_pcm(final, sample_rate=RATE), read_wav(master)
    n = min(len(ours), len(src))
    snr = 10 * np.log10(np.sum(src[:n] ** 2) / np.sum((src[:n] - ours[:n]) ** 2))
    # on this master: 36 dB at quality 4, 36.6 at the constant 192 kbit/s it replaced, 28.5 at quality 3
    assert snr > 33, f"the AAC in the final is {snr:.1f} dB from the master"


def test_delivered_wav_is_the_master_shifted_sample_exactly_to_the_video_length(tmp_path, master):
    provider = provider_result(tmp_path / "provider.mp4", master, delay_s=0.04, seconds=3.0, fps=FPS)
    result = mux(provider, master, tmp_path / "final.mp4")
    wav, rate = read_wav(result.audio_file)
    src, _ = read_wav(master)
    assert rate == RATE and len(wav) == 3 * RATE
    shift_n = result.plan.delay_samples
    assert abs(shift_n - round(result.offset_s * RATE)) == 0 and abs(shift_n - 1920) <= 48
    assert np.max(np.abs(wav[:shift_n])) < 1e-4
    assert np.max(np.abs(wav[shift_n:] - src[: len(wav) - shift_n])) < 2 / 32768
    # every ffmpeg command is on record: the two offset decodes, the WAV, the mp4
    commands = result.to_dict()["commands"]
    assert len(commands) == 4 and all(isinstance(arg, str) for argv in commands for arg in argv)
    assert [("f32le" in argv) for argv in commands] == [True, True, False, False]
    assert "final_audio" in " ".join(commands[2]) and "copy" in commands[3]


@pytest.mark.parametrize("master_seconds", [2.2, 4.0])
def test_master_of_another_length_is_padded_or_cut_to_the_video(tmp_path, master_seconds):
    voice = make_audio(tmp_path / "voice.wav", seconds=master_seconds, rate=RATE, seed=4)
    provider = provider_result(tmp_path / "provider.mp4", voice, delay_s=0.0, seconds=3.0, fps=FPS)
    result = mux(provider, voice, tmp_path / "final.mp4")
    assert len(read_wav(result.audio_file)[0]) == 3 * RATE
    stats = decode_stats(result.path)
    assert stats.video_seconds == pytest.approx(3.0, abs=1 / FPS)
    assert abs(stats.audio_seconds - stats.video_seconds) <= 1 / FPS


def test_tts_job_keeps_the_providers_audio_and_video_untouched(tmp_path, master):
    provider = provider_result(tmp_path / "provider.mp4", master, delay_s=0.0, seconds=2.0, fps=FPS)
    result = mux(provider, None, tmp_path / "final.mp4")
    assert result.audio_source == "provider" and result.audio_file is None
    assert _stream_md5(result.path, "0:v:0") == _stream_md5(provider, "0:v:0")
    assert _stream_md5(result.path, "0:a:0") == _stream_md5(provider, "0:a:0")


def test_unrelated_master_keeps_the_providers_audio_and_says_why(tmp_path, master):
    stranger = make_audio(tmp_path / "stranger.wav", seconds=3.0, rate=RATE, seed=77)
    provider = provider_result(tmp_path / "provider.mp4", stranger, delay_s=0.0, seconds=3.0, fps=FPS)
    result = mux(provider, master, tmp_path / "final.mp4")
    assert result.audio_source == "provider" and result.offset_s is None
    assert result.measurement.correlation < 0.3
    assert any("correlation" in r for r in result.plan.reasons)
    assert _stream_md5(result.path, "0:a:0") == _stream_md5(provider, "0:a:0")


# ---- plan_mux is pure: property tests on synthetic probes -------------------------------------


def _video_probe(seconds: float, fps: float = FPS, audio: bool = True) -> MediaProbe:
    frames = round(seconds * fps)
    video = VideoStream(
        "AVC", "High", 320, 240, 320, 240, 0, fps, "CFR", "progressive", 8, "4:2:0", 1.0, None, frames / fps, frames
    )
    sound = AudioStream("AAC", 2, 44100, seconds, None) if audio else None
    return MediaProbe(Path("result.mp4"), "mp4", seconds, 1000, video, sound)


def _audio_probe(seconds: float, channels: int = 1, bit_depth: int = 16) -> MediaProbe:
    return MediaProbe(
        Path("master.wav"), "wav", seconds, 1000, None, AudioStream("PCM", channels, 48000, seconds, bit_depth)
    )


@settings(max_examples=200)
@given(
    offset=st.floats(-1.5, 1.5),
    seconds=st.floats(0.5, 30),
    fps=st.sampled_from([23.976, 24, 25, 29.97, 30, 50, 60]),
    channels=st.integers(1, 6),
    bit_depth=st.sampled_from([16, 24, 32]),
)
def test_plan_mux_shift_and_length_are_consistent(offset, seconds, fps, channels, bit_depth):
    video = _video_probe(seconds, fps)
    plan = plan_mux(video, _audio_probe(seconds, channels, bit_depth), OffsetMeasurement(offset, 0.95, 3, 10, 2))
    assert plan.audio_source == "master"
    assert min(plan.delay_samples, plan.trim_samples) == 0
    assert plan.delay_samples - plan.trim_samples == round(offset * plan.audio.sample_rate)
    assert plan.total_samples == round(video.video.frame_count / fps * plan.audio.sample_rate)
    assert plan.audio.channels == min(channels, 2)
    assert plan.audio.wav_codec == ("pcm_s16le" if bit_depth == 16 else "pcm_s24le")
    assert plan.audio.aac_quality >= 4
    assert plan.reasons


def test_plan_mux_without_master_or_without_evidence():
    assert plan_mux(_video_probe(3), None, None).audio is None  # stream copy
    pcm = replace(_video_probe(3), audio=AudioStream("PCM", 2, 48000, 3.0, 16))
    assert plan_mux(pcm, None, None).audio_source == "provider" and plan_mux(pcm, None, None).audio is not None
    assert plan_mux(_video_probe(3, audio=False), None, None).audio_source == "none"
    unreliable = plan_mux(_video_probe(3), _audio_probe(3), OffsetMeasurement(0.3, 0.05, 1.1, 10, 2))
    assert unreliable.audio_source == "provider"
    no_reference = plan_mux(_video_probe(3, audio=False), _audio_probe(3), None)
    assert no_reference.audio_source == "master" and no_reference.delay_samples == 0


@settings(max_examples=200)
@given(st.lists(st.floats(0.3, 30), min_size=1, max_size=12))
def test_plan_stitch_never_drifts(durations):
    segments = [_video_probe(s) for s in durations]
    plan = plan_stitch(
        segments, [_audio_probe(s) for s in durations], [VideoTiming("1/12800", s, round(s * FPS)) for s in durations]
    )
    total_video = sum(plan.segment_seconds)
    assert sum(plan.segment_samples) == round(total_video * plan.audio.sample_rate)
    for i, n in enumerate(plan.segment_samples):
        assert abs(n / plan.audio.sample_rate - plan.segment_seconds[i]) <= 1 / plan.audio.sample_rate
    assert plan.video_mode == "copy"


# ---- stitch ------------------------------------------------------------------------------------


def _tone(seconds: float, freq: float, phase_s: float = 0.0) -> np.ndarray:
    t = phase_s + np.arange(round(seconds * RATE)) / RATE
    return 0.5 * np.sin(2 * np.pi * freq * t)


def assert_index_written_in_front(result: MuxResult) -> None:
    """The final's index went straight into the room the plan kept for it: no second pass moved it there."""
    assert isinstance(result.plan, StitchPlan)
    boxes = mp4_boxes(result.path)
    assert [kind for kind, _ in boxes[:3]] == ["ftyp", "moov", "free"] and boxes[-1][0] == "mdat"
    assert boxes[1][1] + boxes[2][1] >= result.plan.index_bytes  # the room, less what the index took, is free


def test_stitch_joins_without_gap_click_or_drift(tmp_path):
    durations = [1.0, 1.24, 0.8]  # whole frames at 25 fps
    segments, audios, start = [], [], 0.0
    for i, seconds in enumerate(durations):
        segments.append(make_video(tmp_path / f"seg{i}.mp4", seconds=seconds, fps=FPS, width=160, height=96))
        # one continuous tone, cut exactly where each segment's video ends
        audios.append(tmp_path / f"seg{i}.wav")
        write_wav(audios[-1], _tone(seconds, 440.0, start), RATE)
        start += seconds
    result = stitch(segments, tmp_path / "out" / "final.mp4", segment_audio=[SegmentSound(a) for a in audios])
    assert result.plan.video_mode == "copy"

    stats = decode_stats(result.path)
    assert stats.video_seconds == pytest.approx(sum(durations), abs=1 / FPS)
    assert stats.video_frames == round(sum(durations) * FPS)
    assert abs(stats.audio_seconds - stats.video_seconds) <= 1 / FPS
    # both streams start at 0: the joins did not shift the pictures against the sound
    assert first_frame_time(result.path, "v") == 0.0 and abs(first_frame_time(result.path, "a")) < 0.001
    pcm = decode_pcm(result.path, sample_rate=RATE)
    body = pcm[int(0.05 * RATE) : int((sum(durations) - 0.05) * RATE)]  # skip the codec's fade-in/out
    # a 440 Hz sine at 0.5 moves at most 0.029 a sample; a click or a gap at a join jumps far more
    assert np.max(np.abs(np.diff(body))) < 0.06
    for join in np.cumsum(durations)[:-1]:
        around = pcm[int((join - 0.01) * RATE) : int((join + 0.01) * RATE)]
        assert np.sqrt(np.mean(around**2)) > 0.3  # 0.35 for the tone: no dropout at the join
    wav, _ = read_wav(result.audio_file)
    assert len(wav) == round(sum(durations) * RATE)
    assert_index_written_in_front(result)


def test_stitch_pads_and_cuts_each_segments_audio_to_its_own_video(tmp_path):
    """Audio a little longer or shorter than its video must not push later segments out of place."""
    durations, audio_lengths, freqs = [1.0, 1.2, 0.8], [1.15, 0.9, 0.8], [300.0, 700.0, 1100.0]
    segments, audios = [], []
    for i, (seconds, length, freq) in enumerate(zip(durations, audio_lengths, freqs, strict=True)):
        segments.append(make_video(tmp_path / f"seg{i}.mp4", seconds=seconds, fps=FPS, width=160, height=96))
        audios.append(tmp_path / f"seg{i}.wav")
        write_wav(audios[-1], _tone(length, freq), RATE)
    result = stitch(segments, tmp_path / "final.mp4", segment_audio=[SegmentSound(a) for a in audios])
    wav, _ = read_wav(result.audio_file)
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    for start, freq in zip(starts, freqs, strict=True):
        window = wav[int((start + 0.02) * RATE) : int((start + 0.12) * RATE)]
        peak = np.fft.rfftfreq(len(window), 1 / RATE)[np.argmax(np.abs(np.fft.rfft(window)))]
        assert peak == pytest.approx(freq, abs=15)
    # segment 1's audio is 0.3 s short of its video: silence until segment 2 starts, not segment 2's sound
    gap = wav[int(2.0 * RATE) : int(2.18 * RATE)]
    assert np.max(np.abs(gap)) < 1e-3


def test_stitch_reencodes_segments_that_differ_and_keeps_the_first_ones_size(tmp_path):
    a = make_video(tmp_path / "a.mp4", seconds=1.0, fps=FPS, width=160, height=96)
    b = make_video(tmp_path / "b.mp4", seconds=1.0, fps=FPS, width=192, height=108)
    result = stitch([a, b], tmp_path / "final.mp4")
    assert result.plan.video_mode == "reencode"
    video = media_info(result.path)["Video"][0]
    assert (video.width, video.height) == (160, 96)
    stats = decode_stats(result.path)
    assert stats.video_frames == 2 * FPS
    assert abs(stats.audio_seconds - stats.video_seconds) <= 1 / FPS
    assert_index_written_in_front(result)


def test_unusable_provider_result_is_a_failed_generation_not_bad_input(tmp_path, master):
    sound_only = make_audio(tmp_path / "result.m4a", seconds=1.0)
    with pytest.raises(VerificationError, match=r"result.m4a.*no video") as err:
        mux(sound_only, master, tmp_path / "final.mp4")
    assert err.value.exit_code == 5
    whole = provider_result(tmp_path / "whole.mp4", master, seconds=2.0)
    cut = truncate_copy(whole, tmp_path / "cut.mp4", keep=0.5)
    with pytest.raises(VerificationError, match=r"cut.mp4"):
        mux(cut, master, tmp_path / "final.mp4")
    assert not (tmp_path / "final.mp4").exists()


def test_tts_audio_longer_than_the_video_is_cut_to_it(tmp_path, master):
    """A provider whose audio runs 0.5 s past its video: kept, but fitted so the final's streams agree."""
    provider = tmp_path / "long_audio.mp4"
    pic = ffmpeg.input(f"testsrc2=size=256x144:rate={FPS}", f="lavfi", t=2.0)
    voice = ffmpeg.input(str(master)).audio.filter("atrim", duration=2.5)
    run_ffmpeg(
        compile_stream(ffmpeg.output(pic, voice, str(provider), vcodec="libx264", preset="ultrafast", acodec="aac")),
        what="long audio",
    )
    assert media_info(provider)["Audio"][0].duration > 2400
    result = mux(provider, None, tmp_path / "final.mp4")
    assert result.audio_source == "provider" and result.plan.audio is not None
    assert _stream_md5(result.path, "0:v:0") == _stream_md5(provider, "0:v:0")
    stats = decode_stats(result.path)
    assert abs(stats.audio_seconds - stats.video_seconds) <= 1 / FPS
    assert measure_offset(provider, result.path).seconds == pytest.approx(0.0, abs=0.002)


def test_cover_art_in_the_result_is_not_taken_for_the_video(tmp_path, master):
    provider = make_video(tmp_path / "with_art.mp4", seconds=2.0, fps=FPS, audio_file=master, cover_art=True)
    result = mux(provider, master, tmp_path / "final.mp4")
    listing = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(result.path)], capture_output=True, text=True
    ).stderr
    streams = [line for line in listing.splitlines() if "Stream #" in line]
    assert len(streams) == 2 and "h264" in streams[0] and "aac" in streams[1]
    assert decode_stats(result.path).video_frames == 2 * FPS


def test_stitch_of_a_rotated_first_segment_keeps_its_displayed_frame(tmp_path):
    upright = make_video(tmp_path / "a.mov", seconds=1.0, fps=FPS, width=160, height=96, rotate=90)
    plain = make_video(tmp_path / "b.mp4", seconds=1.0, fps=FPS, width=160, height=96)
    result = stitch([upright, plain], tmp_path / "final.mp4")
    assert result.plan.video_mode == "reencode"
    video = media_info(result.path)["Video"][0]
    shown = (video.width, video.height) if float(video.rotation or 0) % 180 == 0 else (video.height, video.width)
    assert shown == (96, 160)
    assert decode_stats(result.path).video_frames == 2 * FPS


def test_tts_result_with_pcm_audio_in_a_mov_is_delivered_as_aac(tmp_path, master):
    provider = make_video(tmp_path / "result.mov", seconds=2.0, fps=FPS, audio_file=master, acodec="pcm_s16le")
    result = mux(provider, None, tmp_path / "final.mp4")
    assert media_info(result.path)["Audio"][0].format == "AAC"
    assert measure_offset(provider, result.path).seconds == pytest.approx(0.0, abs=0.002)
    assert _stream_md5(result.path, "0:v:0") == _stream_md5(provider, "0:v:0")


def test_stitch_puts_silence_where_a_segment_has_no_audio(tmp_path):
    a = make_video(tmp_path / "a.mp4", seconds=1.0, fps=FPS, width=160, height=96)
    mute = make_video(tmp_path / "mute.mp4", seconds=0.8, fps=FPS, width=160, height=96, audio=False)
    result = stitch([a, mute], tmp_path / "final.mp4")
    assert result.plan.silent == (1,)
    wav, _ = read_wav(result.audio_file)
    assert len(wav) == round(1.8 * RATE)
    assert np.sqrt(np.mean(wav[int(0.1 * RATE) : int(0.9 * RATE)] ** 2)) > 0.05  # the first segment's tone
    assert np.max(np.abs(wav[int(1.05 * RATE) :])) < 1e-3
    stats = decode_stats(result.path)
    assert abs(stats.audio_seconds - stats.video_seconds) <= 1 / FPS


def test_stitch_never_copies_across_frame_rates_or_time_bases(tmp_path):
    """The concat demuxer keeps each file's timestamps in the first file's time base: copying a 30 fps segment
    after a 25 fps one would play it at the wrong speed."""
    a = make_video(tmp_path / "a.mp4", seconds=1.0, fps=25, width=160, height=96)
    b = make_video(tmp_path / "b.mp4", seconds=1.0, fps=30, width=160, height=96)
    result = stitch([a, b], tmp_path / "final.mp4")
    assert result.plan.video_mode == "reencode"
    stats = decode_stats(result.path)
    assert stats.video_seconds == pytest.approx(2.0, abs=1 / 25)
    assert stats.video_frames == 50


def test_plan_stitch_copies_variable_rate_segments_sharing_a_time_base():
    vfr = [
        replace(_video_probe(s), video=replace(_video_probe(s).video, fps=f, frame_rate_mode="VFR"))
        for s, f in ((4.2, 28.8), (8.0, 29.1))
    ]
    audios = [_audio_probe(4.2), _audio_probe(8.0)]
    same = [VideoTiming("1/15360", 4.2, 121), VideoTiming("1/15360", 8.0, 233)]
    other = [VideoTiming("1/15360", 4.2, 121), VideoTiming("1/12800", 8.0, 233)]
    assert plan_stitch(vfr, audios, same).video_mode == "copy"
    assert plan_stitch(vfr, audios, other).video_mode == "reencode"


def test_stitch_copies_variable_rate_segments_and_keeps_every_frame(tmp_path):
    parts = [
        make_video(tmp_path / f"v{i}.mp4", seconds=s, fps=FPS, width=160, height=96, vfr=True)
        for i, s in enumerate([1.2, 0.8])
    ]
    result = stitch(parts, tmp_path / "final.mp4")
    assert result.plan.video_mode == "copy"
    each = [decode_stats(p) for p in parts]
    stats = decode_stats(result.path)
    assert stats.video_frames == sum(s.video_frames for s in each)
    assert stats.video_seconds == pytest.approx(sum(s.video_seconds for s in each), abs=1 / FPS)
    assert abs(stats.audio_seconds - stats.video_seconds) <= 1 / FPS
    assert_index_written_in_front(result)


@pytest.mark.parametrize("vfr", [False, True])
def test_video_timing_ends_where_the_decoded_video_ends(tmp_path, vfr):
    clip = make_video(tmp_path / "clip.mp4", seconds=0.8, fps=FPS, width=160, height=96, vfr=vfr)
    timing = video_timing(clip)
    assert timing.seconds == pytest.approx(decode_stats(clip).video_seconds, abs=1e-3)
    assert timing.time_base.startswith("1/")


def test_final_keeps_the_providers_display_rotation(tmp_path, master):
    provider = make_video(tmp_path / "portrait.mp4", seconds=2.0, fps=FPS, audio_file=master, rotate=90)
    result = mux(provider, master, tmp_path / "final.mp4")
    video = media_info(result.path)["Video"][0]
    assert float(video.rotation) == float(media_info(provider)["Video"][0].rotation) == 90.0


@pytest.mark.parametrize("video_late, audio_late", [(0.2, 0.0), (0.0, 0.2)])
def test_streams_that_start_late_keep_their_relation_on_the_file_timeline(tmp_path, master, video_late, audio_late):
    plain = provider_result(tmp_path / "plain.mp4", master, delay_s=0.04, seconds=3.0, fps=FPS)
    provider = tmp_path / "late.mp4"
    v = ffmpeg.input(str(plain), itsoffset=video_late)["v:0"]
    a = ffmpeg.input(str(plain), itsoffset=audio_late)["a:0"]
    run_ffmpeg(compile_stream(ffmpeg.output(v, a, str(provider), c="copy")), what="shifting streams")
    result = mux(provider, master, tmp_path / "final.mp4")
    assert first_frame_time(result.path, "v") == pytest.approx(first_frame_time(provider, "v"), abs=1e-3)
    assert result.offset_s == pytest.approx(0.04 + audio_late, abs=0.002)
    assert measure_offset(provider, result.path).seconds == pytest.approx(0.0, abs=0.002)


def test_joined_results_are_each_aligned_to_their_master_and_the_sound_encoded_once(tmp_path, master):
    """Several provider results (each with its own delay) and their masters: every master placed on its result
    inside the one join (no WAV or mp4 per segment), the pictures stitched from the results themselves, the
    sound encoded to AAC once, in the final."""
    results, masters, delays = [], [], [0.04, -0.02]
    for i, delay in enumerate(delays):
        masters.append(make_audio(tmp_path / f"master{i}.wav", seconds=2.0, rate=RATE, seed=30 + i))
        results.append(provider_result(tmp_path / f"result{i}.mp4", masters[-1], delay_s=delay, seconds=2.0, fps=FPS))
    work = tmp_path / "work"
    work.mkdir()
    parts, final = join_results(results, masters, work, "final.mp4")

    assert [p.offset_s for p in parts] == [pytest.approx(d, abs=0.001) for d in delays]
    assert not list(work.glob("segment-*.mp4"))  # no mp4 per segment: the pictures come from the results
    assert not list(work.glob("segment-*.wav"))  # no WAV per segment: each master is placed inside the join
    encodes = [argv for m in [*parts, final] for argv in m.commands() if "aac" in argv]
    assert len(encodes) == 1
    stats = decode_stats(final.path)
    assert stats.video_seconds == pytest.approx(4.0, abs=1 / FPS)
    assert abs(stats.audio_seconds - stats.video_seconds) <= 1 / FPS
    for i, result in enumerate(results):  # each half of the final lines up with its provider result's sound
        half = tmp_path / f"half{i}.wav"
        run_ffmpeg(
            [ffmpeg_exe(), "-v", "error", "-ss", f"{2.0 * i}", "-t", "2", "-i", str(final.path), str(half)],
            what="cutting the final",
        )
        assert measure_offset(result, half).seconds == pytest.approx(0.0, abs=0.002)


def test_joined_tts_results_keep_their_own_sound(tmp_path, master):
    results = [provider_result(tmp_path / f"tts{i}.mp4", master, delay_s=0.0, seconds=1.2, fps=FPS) for i in range(2)]
    work = tmp_path / "work"
    work.mkdir()
    parts, final = join_results(results, [None, None], work, "final.mp4")
    assert [p.audio_source for p in parts] == ["provider", "provider"]
    assert decode_stats(final.path).video_seconds == pytest.approx(2.4, abs=1 / FPS)
    assert final.audio_source == "provider"
