"""execute_video() on real media generated at test time; every expectation is checked by probing the output
independently (pymediainfo directly, or a full ffmpeg decode)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from audio_timing_media import RATE, plain_decode, voice_offset
from hypothesis import given
from hypothesis import strategies as st
from media import (
    assert_provider_ready,
    decode_stats,
    gray_frames,
    hevc_h264_sei,
    make_audio,
    make_hdr10,
    make_video,
    media_info,
    mp4_atoms,
    stream_side_data,
)

from pipeline.errors import InputError, ValidationError
from pipeline.ffmpeg import ffmpeg_exe
from pipeline.limits import load_limits
from pipeline.stages.conform_video import (
    SEEKABLE_CONTAINERS,
    Leg,
    VideoOptions,
    execute_video,
    plan_video,
    read_by_seeking,
)
from pipeline.stages.probe import MediaProbe, probe_video

LIMITS = load_limits()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tmp_path_factory.mktemp("conform media ü")


def conform(src: Path, dst: Path, limits=LIMITS, **opts):
    plan = plan_video(probe_video(src), limits, VideoOptions(**opts))
    return plan, execute_video(plan, dst)


def video_track(path: Path):
    return media_info(path)["Video"][0]


def packets_md5(path: Path, stream: str) -> str:
    argv = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", stream, "-c", "copy", "-f", "md5", "-"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_compliant_mp4_is_stream_copied_with_faststart(media):
    src = make_video(media / "compliant clip.mp4", seconds=2, width=320, height=240)
    assert mp4_atoms(src).index("mdat") < mp4_atoms(src).index("moov")  # made without faststart
    plan, result = conform(src, media / "out" / "compliant clip.mp4")
    assert plan.mode == "copy" and len(result.runs) == 1
    assert_provider_ready(result.path)
    assert packets_md5(result.path, "0:v:0") == packets_md5(src, "0:v:0")  # not re-encoded
    assert packets_md5(result.path, "0:a:0") == packets_md5(src, "0:a:0")


def test_rotated_phone_clip_is_turned_upright_like_a_player_shows_it(media):
    src = make_video(media / "phone.mov", width=320, height=180, rotate=90)
    plan, result = conform(src, media / "out" / "phone upright.mp4")
    assert plan.mode == "transcode" and plan.rotation == 90
    assert_provider_ready(result.path)
    video = video_track(result.path)
    assert (video.width, video.height) == (180, 320)  # portrait stays portrait, no tag left (checked above)
    shown = gray_frames(src).astype(float)  # ffmpeg's autorotate: what players display
    got = gray_frames(result.path).astype(float)
    assert got.shape == shown.shape
    assert np.abs(got - shown).mean() < 6
    assert np.abs(got - shown[:, ::-1, ::-1]).mean() > 4 * np.abs(got - shown).mean()  # direction matters


def test_interlaced_mpeg2_ts_is_deinterlaced_to_h264_mp4(media):
    src = make_video(media / "broadcast.ts", vcodec="mpeg2video", acodec="mp2", interlaced=True, seconds=2)
    plan, result = conform(src, media / "out" / "broadcast.mp4")
    assert plan.deinterlace
    assert_provider_ready(result.path)
    assert video_track(result.path).scan_type == "Progressive"
    assert decode_stats(result.path).video_frames == 50


def test_variable_frame_rate_becomes_constant(media):
    src = make_video(media / "screen rec.mp4", vfr=True, fps=30, seconds=2)
    assert video_track(src).frame_rate_mode == "VFR"
    plan, result = conform(src, media / "out" / "screen rec.mp4")
    assert_provider_ready(result.path)
    video = video_track(result.path)
    assert float(video.frame_rate) == pytest.approx(plan.fps)
    stats = decode_stats(result.path)
    assert stats.video_frames == pytest.approx(stats.video_seconds * plan.fps, abs=1)


def test_hdr_hevc_10bit_is_tone_mapped_to_8bit_bt709(media):
    src = make_video(media / "hdr.mp4", vcodec="libx265", pix_fmt="yuv420p10le", hdr="pq", seconds=1)
    plan, result = conform(src, media / "out" / "hdr.mp4")
    assert plan.tonemap == "PQ"
    assert_provider_ready(result.path)
    video = video_track(result.path)
    assert video.transfer_characteristics == "BT.709" and video.color_primaries == "BT.709"
    assert 16 < gray_frames(result.path).mean() < 235  # a picture, not black or blown out


HDR_SEI = ("Mastering Display Colour Volume", "Content Light Level Information")
HDR_MEDIAINFO = (
    "hdr_format",
    "mastering_display_color_primaries",
    "mastering_display_luminance",
    "maximum_content_light_level",
    "maximum_frameaverage_light_level",
)


def colour_tags(path: Path) -> tuple:
    video = video_track(path)
    return video.color_primaries, video.transfer_characteristics, video.matrix_coefficients, video.color_range


def test_hdr10_tone_mapped_to_sdr_keeps_no_mastering_display_or_light_level(media):
    src = make_hdr10(media / "hdr10 grade.mp4")
    # the source really carries the metadata: in its SEI, and as MediaInfo reads it
    assert all(sei in hevc_h264_sei(src) for sei in HDR_SEI)
    assert video_track(src).mastering_display_luminance and video_track(src).maximum_content_light_level
    plan, result = conform(src, media / "out" / "hdr10 grade.mp4")
    assert plan.tonemap == "PQ"
    assert colour_tags(result.path) == ("BT.709", "BT.709", "BT.709", "Limited")
    assert not any(sei in hevc_h264_sei(result.path) for sei in HDR_SEI)  # no SEI in the H.264 stream
    side = stream_side_data(result.path)
    assert "Mastering display" not in side and "Content light level" not in side  # no mdcv/clli boxes
    data = video_track(result.path).to_data()
    assert not [k for k in HDR_MEDIAINFO if data.get(k)], data


@pytest.mark.parametrize(
    "name, make, tags",
    [
        (
            "untagged SD copy",
            lambda d: make_video(d / "sd.mp4", seconds=1),
            ("BT.601 NTSC", "BT.601", "BT.601", "Limited"),
        ),
        (
            "untagged HD transcode",
            lambda d: make_video(d / "hd.mkv", seconds=0.4, width=1280, height=720),
            ("BT.709", "BT.709", "BT.709", "Limited"),
        ),
        (
            "full-range BT.601 transcode",
            lambda d: make_video(
                d / "full.mp4",
                seconds=1,
                colorspace="bt470bg",
                color_primaries="bt470bg",
                color_trc="gamma28",
                color_range="pc",
            ),
            ("BT.709", "BT.709", "BT.709", "Limited"),
        ),
    ],
)
def test_every_output_states_its_colour(media, name, make, tags):
    """Copied or encoded, the output's colour description is written down (how a player would read the
    source, or BT.709 limited range after a conversion), never left for the player to guess."""
    plan, result = conform(make(media), media / "out" / f"{name}.mp4")
    assert plan.mode == ("copy" if "copy" in name else "transcode")
    assert colour_tags(result.path) == tags


def test_big_picture_is_downscaled_to_the_limit_keeping_the_aspect(media):
    src = make_video(media / "wide.mkv", width=640, height=272, seconds=1)
    limits = load_limits(overrides={"video_max_side": 300})
    _plan, result = conform(src, media / "out" / "wide.mp4", limits)
    assert_provider_ready(result.path, limits)
    video = video_track(result.path)
    assert (video.width, video.height) == (300, 126)  # 272 * 300/640 = 127.5, floored to even


def test_small_odd_picture_is_never_upscaled(media):
    src = make_video(media / "odd.mkv", width=321, height=181, seconds=1, vcodec="libx264", pix_fmt="yuv444p")
    _, result = conform(src, media / "out" / "odd.mp4")
    assert_provider_ready(result.path)
    assert (video_track(result.path).width, video_track(result.path).height) == (320, 180)


def test_anamorphic_pixels_become_square(media):
    src = make_video(media / "dv.mov", width=720, height=480, sar="8:9", seconds=1)
    _, result = conform(src, media / "out" / "dv.mp4")
    assert_provider_ready(result.path)
    assert (video_track(result.path).width, video_track(result.path).height) == (640, 480)


def test_prores_with_surround_96k_pcm(media):
    src = make_video(
        media / "master.mov",
        vcodec="prores_ks",
        pix_fmt="yuv422p10le",
        acodec="pcm_s24le",
        audio_channels=6,
        audio_rate=96000,
        seconds=1,
    )
    plan, result = conform(src, media / "out" / "master.mp4")
    assert_provider_ready(result.path)
    audio = media_info(result.path)["Audio"][0]
    assert (audio.channel_s, audio.sampling_rate) == (2, 48000)
    assert plan.audio == "aac"


def test_over_long_input_is_trimmed_to_the_limit_with_a_warning(media):
    src = make_video(media / "long take.webm", seconds=4)
    limits = load_limits(overrides={"video_max_seconds": 2.5})
    plan, result = conform(src, media / "out" / "long take.mp4", limits)
    # 2.5 s is 62.5 frames at 25 fps: 62 whole frames stay under the limit
    assert "4.000 s is over the 2.5 s limit: kept 0.000-2.480 s, cut 2.480-4.000 s" in plan.warnings[0]
    assert plan.warnings[0].startswith("long take.webm: ")
    stats = decode_stats(result.path)
    assert stats.video_frames == 62 and stats.video_seconds == pytest.approx(2.48, abs=1e-3)
    assert stats.audio_seconds == pytest.approx(2.48, abs=0.025)
    assert probe_video(result.path).duration <= 2.5


def test_start_and_end_cut_the_exact_window(media):
    src = make_video(media / "source.mp4", seconds=4)
    _, result = conform(src, media / "out" / "window.mp4", start=1.0, end=2.2)
    stats = decode_stats(result.path)
    assert stats.video_frames == 30 and stats.audio_seconds == pytest.approx(1.2, abs=0.03)
    whole = gray_frames(src).astype(float)
    got = gray_frames(result.path).astype(float)
    assert np.abs(got[0] - whole[25]).mean() < np.abs(got[0] - whole[0]).mean() / 3  # it starts at 1.0 s


def _closest_source_frame(frame: np.ndarray, source: np.ndarray) -> int:
    return int(np.argmin(np.abs(source.astype(float) - frame.astype(float)).mean(axis=(1, 2))))


def test_loop_repeats_the_clip_to_the_target_duration(media):
    src = make_video(media / "short loop.mp4", seconds=1, fps=25)
    _plan, result = conform(src, media / "out" / "looped.mp4", target_duration=2.6, extend="loop")
    stats = decode_stats(result.path)
    assert stats.video_frames == 65 and stats.video_seconds == pytest.approx(2.6, abs=1 / 25)
    assert stats.audio_seconds == pytest.approx(2.6, abs=1 / 25)
    source, got = gray_frames(src), gray_frames(result.path)
    assert [_closest_source_frame(got[i], source) for i in (3, 28, 53)] == [3, 3, 3]


def test_bounce_plays_forward_then_backward(media):
    src = make_video(media / "short bounce.mp4", seconds=1, fps=25)
    _, result = conform(src, media / "out" / "bounced.mp4", target_duration=1.8, extend="bounce")
    stats = decode_stats(result.path)
    assert stats.video_frames == 45 and stats.audio_seconds == pytest.approx(1.8, abs=1 / 25)
    source, got = gray_frames(src), gray_frames(result.path)
    assert [_closest_source_frame(got[i], source) for i in (5, 24, 25, 30, 44)] == [5, 24, 24, 19, 5]


def test_a_tight_byte_limit_is_met_in_one_encode(media):
    src = make_video(media / "grainy.mp4", width=640, height=360, seconds=3, grain=50, b="8M")
    limits = load_limits(overrides={"video_max_bytes": 400_000})
    assert src.stat().st_size > 2 * limits.video_max_bytes
    _plan, result = conform(src, media / "out" / "grainy.mp4", limits)
    assert len(result.runs) == 1
    assert result.size_bytes == result.path.stat().st_size <= 400_000
    assert_provider_ready(result.path, limits)


def test_an_overshoot_is_re_encoded_once_with_a_lower_cap(media):
    src = make_video(media / "grainy2.mp4", width=640, height=360, seconds=2, grain=50, b="8M")
    limits = load_limits(overrides={"video_max_bytes": 300_000})
    plan = plan_video(probe_video(src), limits)
    greedy = replace(plan, crf=8, maxrate=40_000_000, bufsize=40_000_000)  # a cap far above the budget
    result = execute_video(greedy, media / "out" / "grainy2.mp4")
    assert len(result.runs) == 2 and len(result.attempts) == 2
    assert result.plan.maxrate < greedy.maxrate and result.plan.decisions[-1].what == "retry"
    assert result.path.stat().st_size <= 300_000


def test_what_cannot_fit_fails_and_leaves_no_file(media):
    src = make_video(media / "grainy3.mp4", width=640, height=360, seconds=1, grain=50)
    out_dir = media / "nothing left"
    limits = load_limits(overrides={"video_max_bytes": 2_000})
    with pytest.raises(ValidationError, match=r"over the 0.002 MB limit, even after 2 encode"):
        conform(src, out_dir / "never.mp4", limits, keep_audio=False)
    assert list(out_dir.iterdir()) == []


def test_sound_can_be_dropped_and_silent_video_loops(media):
    src = make_video(media / "silent.mp4", seconds=1, audio=False)
    plan, result = conform(src, media / "out" / "silent looped.mp4", target_duration=1.5, extend="loop")
    assert plan.audio == "none" and "Audio" not in media_info(result.path)
    _, dropped = conform(make_video(media / "noisy.mp4", seconds=1), media / "out" / "dropped.mp4", keep_audio=False)
    assert "Audio" not in media_info(dropped.path)


def test_progress_is_reported_up_to_done(media):
    src = make_video(media / "progress.mkv", seconds=2)
    seen: list[float] = []
    execute_video(plan_video(probe_video(src), LIMITS), media / "out" / "progress.mp4", progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == 1.0


def test_hostile_file_names_stay_files(media, monkeypatch):
    monkeypatch.chdir(media)
    src = make_video(Path("-take:2 ü.webm"), seconds=1)  # relative, a protocol-like colon, a leading dash
    plan, _result = conform(src, Path("-out:2 ü.mp4"))
    assert plan.mode == "transcode"
    assert (media / "-out:2 ü.mp4").exists()
    assert_provider_ready(media / "-out:2 ü.mp4")


def test_compliant_picture_with_pcm_sound_copies_the_picture_and_encodes_the_sound(media):
    src = make_video(media / "camera.mov", acodec="pcm_s16le", audio_channels=1, audio_rate=32000)
    plan, result = conform(src, media / "out" / "camera.mp4")
    assert (plan.mode, plan.audio) == ("copy", "aac")
    assert packets_md5(result.path, "0:v:0") == packets_md5(src, "0:v:0")
    audio = media_info(result.path)["Audio"][0]
    assert (audio.format, audio.channel_s, audio.sampling_rate) == ("AAC", 1, 48000)
    assert_provider_ready(result.path)


def test_motion_jpeg_avi_is_video_not_cover_art(media):
    src = make_video(media / "webcam.avi", vcodec="mjpeg", pix_fmt="yuvj420p")
    p = probe_video(src)
    assert (p.container, p.video.codec, p.cover_art) == ("avi", "JPEG", False)
    _, result = conform(src, media / "out" / "webcam.mp4")
    assert_provider_ready(result.path)
    stats = decode_stats(result.path)  # AVI's index may declare one frame more than it holds: CFR fills it
    assert stats.video_frames == round(stats.video_seconds * 25) >= 50


def test_high_speed_capture_is_resampled_to_the_kept_rate(media):
    src = make_video(media / "slowmo.mp4", width=160, height=120, fps=120, seconds=1)
    plan, result = conform(src, media / "out" / "slowmo.mp4")
    assert plan.mode == "transcode" and plan.fps == 60.0
    assert float(video_track(result.path).frame_rate) == 60.0
    assert decode_stats(result.path).video_frames == 60


def test_cover_art_stored_before_the_video_is_skipped(media):
    tagged = make_video(media / "tagged.mp4", cover_art=True)
    src = media / "cover first.mp4"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-i",
            str(tagged),
            "-map",
            "0:v:1",
            "-map",
            "0:v:0",
            "-map",
            "0:a",
            "-c",
            "copy",
            "-disposition:v:0",
            "attached_pic",
            "-disposition:v:1",
            "default",
            str(src),
        ],
        check=True,
    )
    p = probe_video(src)
    assert p.cover_art and (p.video.codec, p.video.width) == ("AVC", 320)
    plan, result = conform(src, media / "out" / "cover first.mp4")
    assert plan.mode == "copy"
    assert [t.format for t in media_info(result.path)["Video"]] == ["AVC"]
    assert packets_md5(result.path, "0:v:0") == packets_md5(tagged, "0:v:0")
    json.dumps(result.to_dict())  # goes into the manifest as it is


def test_a_source_ffmpeg_cannot_convert_is_a_one_line_input_error(tmp_path):
    src = make_video(tmp_path / "replaced.mkv", seconds=1, width=64, height=48)
    plan = plan_video(probe_video(src), LIMITS)
    src.write_bytes(b"\x1aE\xdf\xa3 not matroska any more" * 100)  # changed between probe and conform
    with pytest.raises(InputError, match=r"replaced.mkv: ffmpeg cannot convert it \(.+\)") as err:
        execute_video(plan, tmp_path / "out.mp4")
    assert err.value.exit_code == 6 and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == [src]


# ---- containers without a seek index: legs read from the start, cut on decoded timestamps ----------------------

UNINDEXED = {  # suffix -> (frame rate, codecs); ffmpeg writes no seek index in any of them
    ".ts": (25, {}),  # MediaInfo reads no frame rate from a short TS: probe falls back to 25 fps
    ".mpg": (24, {"vcodec": "mpeg2video", "acodec": "mp2"}),  # MPEG-2 program stream
    ".flv": (24, {}),
}


def stored_frames(path: Path) -> np.ndarray:
    """Every frame as stored, in gray: no seek (an input -ss reads nothing from some of these files) and no
    frame-rate conversion."""
    video = video_track(path)
    argv = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-nostdin",
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "gray",
        "-",
    ]
    raw = subprocess.run(argv, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, int(video.height), int(video.width))


def source_indices(path: Path, source: np.ndarray) -> list[int]:
    """For each frame of `path`, the index of the source frame it shows."""
    return [_closest_source_frame(frame, source) for frame in stored_frames(path)]


@pytest.mark.parametrize("suffix", UNINDEXED)
def test_a_cut_in_a_container_without_a_seek_index_starts_at_the_asked_frame(media, suffix):
    fps, codecs = UNINDEXED[suffix]
    src = make_video(media / f"no index{suffix}", seconds=2, fps=fps, width=160, height=120, **codecs)
    plan, result = conform(src, media / "out" / f"cut from{suffix}.mp4", start=0.5)
    assert not plan.seek and "no reliable seek index" in {d.what: d.reason for d in plan.decisions}["seek"]
    assert_provider_ready(result.path)
    stats = decode_stats(result.path)
    assert abs(stats.video_frames - 1.5 * fps) <= 1 and stats.video_seconds == pytest.approx(1.5, abs=1 / fps + 1e-3)
    # a plain cut keeps the window's length, which may end inside a frame: sound and picture within a frame
    assert stats.audio_seconds == pytest.approx(stats.video_seconds, abs=1 / fps + 1e-3)
    shown = source_indices(result.path, stored_frames(src))
    assert abs(shown[0] / fps - 0.5) < 1 / fps  # the frame on screen at 0.5 s (or the next, as -ss picks)
    assert shown == list(range(shown[0], shown[0] + len(shown)))


def test_a_bounce_in_a_transport_stream_plays_the_window_forward_then_backward(media):
    src = make_video(media / "bounce.ts", seconds=2, fps=25, width=160, height=120)
    plan, result = conform(
        src, media / "out" / "bounced ts.mp4", start=0.48, end=0.96, target_duration=1.2, extend="bounce"
    )
    assert not plan.seek and [leg.reverse for leg in plan.legs] == [False, True, False]
    assert decode_stats(result.path).video_frames == 30
    window = list(range(12, 24))
    assert source_indices(result.path, stored_frames(src)) == window + window[::-1] + window[:6]


def test_the_sound_of_a_cut_transport_stream_stays_with_its_picture(media, tmp_path):
    voice = make_audio(tmp_path / "voice.wav", seconds=2, level_db=-20)
    src = make_video(media / "talk.ts", seconds=2, fps=25, width=160, height=120, audio_file=voice, audio_channels=1)
    _, result = conform(src, media / "out" / "talk cut.mp4", start=0.5)
    first = source_indices(result.path, stored_frames(src))[0]  # the voice and the picture start together in src
    heard, correlation = voice_offset(plain_decode(voice)[first * RATE // 25 :], plain_decode(result.path))
    assert correlation > 0.9
    assert abs(heard) < 1 / 25  # the sound is cut where the picture is, as an input seek cuts both


def test_an_flv_given_whole_keeps_every_frame(media):
    """ffmpeg's input seek in an FLV it wrote reads nothing, even `-ss` to the first frame (21 ms in)."""
    src = make_video(media / "whole.flv", seconds=1, width=160, height=120)
    plan, result = conform(src, media / "out" / "whole flv.mp4")
    assert plan.offset > 0 and not plan.seek
    assert source_indices(result.path, stored_frames(src)) == list(range(25))


def test_indexed_containers_keep_the_input_seek(media):
    src = make_video(media / "indexed.mkv", seconds=2, fps=24, width=160, height=120)
    plan, result = conform(src, media / "out" / "indexed cut.mp4", start=0.5)
    assert plan.seek and "-ss" in result.runs[0].argv
    assert source_indices(result.path, stored_frames(src)) == list(range(12, 48))


@given(
    container=st.sampled_from(["mp4", "mov", "mkv", "webm", "mpegts", "mpegps", "flv", "avi", "mxf", "asf"]),
    starts=st.lists(st.floats(0, 30), min_size=1, max_size=4),
    offset=st.floats(0, 1),
)
def test_only_an_indexed_container_is_read_by_seeking(container, starts, offset):
    probe = MediaProbe(path=Path("clip"), container=container, duration=40.0, size_bytes=1, video=None, audio=None)
    seek, decision = read_by_seeking(probe, tuple(Leg(s, 1.0) for s in starts), offset)
    assert seek == (container in SEEKABLE_CONTAINERS or max(starts) + offset == 0)
    assert (decision is None) == (max(starts) + offset == 0)
    assert decision is None or container in decision.reason
