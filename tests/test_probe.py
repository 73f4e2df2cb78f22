"""probe(): real media generated at test time; expectations come from how the files were made."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from media import make_audio, make_image, make_offset_streams, make_video, media_info, truncate_copy

from pipeline.errors import InputError
from pipeline.ffmpeg import ffmpeg_exe
from pipeline.limits import load_limits
from pipeline.stages import probe as probe_module
from pipeline.stages.conform_video import execute_video, plan_video
from pipeline.stages.probe import check_limits, probe, probe_audio, probe_video


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tmp_path_factory.mktemp("probe media")


def test_plain_h264_mp4(media):
    p = probe(make_video(media / "plain clip é.mp4", seconds=2, width=320, height=240, fps=25))
    assert p.container == "mp4"
    assert p.duration == pytest.approx(2.0, abs=0.05)
    assert p.size_bytes == (media / "plain clip é.mp4").stat().st_size
    v = p.video
    assert (v.codec, v.profile, v.width, v.height) == ("AVC", "High", 320, 240)
    assert (v.display_width, v.display_height, v.rotation) == (320, 240, 0)
    assert v.fps == pytest.approx(25.0)
    assert (v.frame_rate_mode, v.scan_type, v.bit_depth, v.chroma_subsampling) == ("CFR", "progressive", 8, "4:2:0")
    assert v.pixel_aspect_ratio == pytest.approx(1.0) and v.hdr_transfer is None
    assert v.frame_count == 50
    a = p.audio
    assert (a.codec, a.channels, a.sample_rate) == ("AAC", 2, 48000)
    assert a.duration == pytest.approx(2.0, abs=0.05)
    assert not p.cover_art and p.warnings == ()


@pytest.mark.parametrize("rotate, shown", [(90, (180, 320)), (180, (320, 180)), (270, (180, 320))])
def test_phone_rotation_tag_swaps_the_display_size(media, rotate, shown):
    p = probe(make_video(media / f"phone {rotate}.mov", width=320, height=180, rotate=rotate))
    assert p.container == "mov"
    assert (p.video.width, p.video.height) == (320, 180)  # coded size is untouched
    assert p.video.rotation == rotate
    assert (p.video.display_width, p.video.display_height) == shown


def test_interlaced_mpeg2_transport_stream(media):
    p = probe(make_video(media / "broadcast.ts", vcodec="mpeg2video", acodec="mp2", interlaced=True))
    assert p.container == "mpegts"
    assert p.video.codec == "MPEG Video"
    assert p.video.scan_type == "interlaced"
    assert p.audio.codec == "MPEG Audio"


def test_interlaced_h264_is_mbaff(media):
    assert probe(make_video(media / "mbaff.mp4", interlaced=True)).video.scan_type == "mbaff"


def test_variable_frame_rate(media):
    p = probe(make_video(media / "screen.mp4", vfr=True, fps=30))
    assert p.video.frame_rate_mode == "VFR"
    assert p.video.fps == pytest.approx(p.video.frame_count / p.video.duration, rel=0.06)
    assert p.video.duration == pytest.approx(2.0, abs=2 / 30)  # the last frame of a VFR stream has no set length


@pytest.mark.parametrize("hdr, transfer", [("pq", "PQ"), ("hlg", "HLG")])
def test_hevc_10bit_hdr(media, hdr, transfer):
    p = probe(make_video(media / f"hdr {hdr}.mp4", vcodec="libx265", pix_fmt="yuv420p10le", hdr=hdr))
    assert (p.video.codec, p.video.profile, p.video.bit_depth) == ("HEVC", "Main 10", 10)
    assert p.video.hdr_transfer == transfer


def test_prores_with_24bit_pcm(media):
    p = probe(make_video(media / "master.mov", vcodec="prores_ks", pix_fmt="yuv422p10le", acodec="pcm_s24le"))
    assert (p.container, p.video.codec, p.video.chroma_subsampling) == ("mov", "ProRes", "4:2:2")
    assert (p.audio.codec, p.audio.bit_depth) == ("PCM", 24)


def test_anamorphic_pixels_give_the_display_width(media):
    p = probe(make_video(media / "dv.mp4", width=720, height=480, sar="8:9"))
    assert p.video.pixel_aspect_ratio == pytest.approx(8 / 9, abs=0.002)
    assert (p.video.display_width, p.video.display_height) == (640, 480)


def test_webm(media):
    p = probe(make_video(media / "clip.webm"))
    assert (p.container, p.video.codec, p.audio.codec) == ("webm", "VP9", "Opus")


def test_surround_96k_audio(media):
    p = probe(make_audio(media / "surround.wav", rate=96000, channels=6, bit_depth=24))
    assert p.container == "wav" and p.video is None
    assert (p.audio.channels, p.audio.sample_rate, p.audio.bit_depth) == (6, 96000, 24)


def test_mp3_cover_art_is_not_video(media):
    path = make_audio(media / "voice with cover.mp3", cover_art=True)
    p = probe(path)
    assert p.container == "mp3" and p.cover_art and p.video is None
    assert p.audio.codec == "MPEG Audio"
    with pytest.raises(InputError, match=r"audio-only.*cover art") as err:
        probe_video(path)
    assert err.value.exit_code == 6


def test_mp4_cover_art_leaves_the_real_video(media):
    p = probe(make_video(media / "tagged.mp4", cover_art=True))
    assert p.cover_art
    assert (p.video.codec, p.video.width, p.video.frame_count) == ("AVC", 320, 50)


def test_probe_audio_wants_sound(media):
    with pytest.raises(InputError, match="no audio stream"):
        probe_audio(make_video(media / "silent film.mp4", audio=False))


# ---- bad input: one line naming the file and the reason, exit code 6 -----------------------------------------


def _refused(path: Path, match: str) -> InputError:
    with pytest.raises(InputError, match=match) as err:
        probe(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.exit_code == 6
    return err.value


def test_missing_file(media):
    _refused(media / "nope ü.mp4", "no such file")


def test_directory(media):
    _refused(media, "not a regular file")


def test_zero_bytes(media):
    path = media / "empty.mp4"
    path.write_bytes(b"")
    _refused(path, "empty")


def test_text_renamed_mp4(media):
    path = media / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    _refused(path, "not a media file")


def test_unsupported_container(media):
    path = media / "archive.mp4"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.txt", "hello" * 100)
    _refused(path, "unsupported container 'ZIP'")


def test_still_image(media):
    _refused(make_image(media / "poster.png"), "still image")


def test_truncated_mp4_with_index_at_the_end(media):
    whole = make_video(media / "whole.mp4", seconds=4)
    _refused(truncate_copy(whole, media / "cut.mp4", keep=0.5), "truncated")


def test_truncated_faststart_mp4_declares_more_than_it_holds(media):
    whole = make_video(media / "whole fs.mp4", seconds=4, faststart=True)
    _refused(truncate_copy(whole, media / "cut fs.mp4", keep=0.4), r"truncated: it declares 4\.00 s but only")


def test_truncated_webm(media):
    whole = make_video(media / "whole.webm", seconds=4)
    _refused(truncate_copy(whole, media / "cut.webm", keep=0.5), "truncated")


def test_truncated_wav(media):
    whole = make_audio(media / "whole.wav", seconds=2)
    _refused(truncate_copy(whole, media / "cut.wav", keep=0.5), "truncated")


def test_streamed_wav_with_unknown_sizes_is_fine(media):
    src = make_audio(media / "to pipe.wav", seconds=2)
    piped = media / "piped.wav"
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(src), "-f", "wav", "-"], capture_output=True)
    piped.write_bytes(out.stdout)
    assert piped.read_bytes()[4:8] == b"\xff\xff\xff\xff"  # the RIFF size a pipe leaves behind
    p = probe(piped)
    assert p.audio.duration == pytest.approx(2.0, abs=0.05)


def test_trailing_junk_is_not_truncation(media):
    path = media / "junk tail.mp4"
    path.write_bytes(make_video(media / "clean.mp4").read_bytes() + b"\x00junk" * 1000)
    p = probe(path)
    assert p.video.frame_count == 50
    assert any("truncated" in w for w in p.warnings)


def test_audio_only_given_as_video(media):
    path = make_audio(media / "voice.m4a")
    assert probe(path).video is None
    with pytest.raises(InputError, match="audio-only"):
        probe_video(path)


# ---- limits --------------------------------------------------------------------------------------------------


def test_check_limits_names_each_broken_limit(media):
    p = probe(make_video(media / "big.webm", seconds=3, width=640, height=360))
    tight = load_limits(overrides={"video_max_side": 600, "video_max_bytes": 1000, "video_max_seconds": 2.0})
    found = {v.limit: v for v in check_limits(p, tight, "video")}
    assert set(found) == {"video_containers", "video_max_side", "video_max_bytes", "video_max_seconds"}
    assert found["video_max_side"].value == 640 and found["video_max_side"].allowed == 600
    assert "600 px" in found["video_max_side"].reason
    assert "webm" in found["video_containers"].reason
    assert check_limits(probe(make_video(media / "fine.mp4")), load_limits(), "video") == []


def test_check_limits_uses_the_display_size_of_rotated_video(media):
    p = probe(make_video(media / "tall.mov", width=320, height=180, rotate=90))
    found = check_limits(p, load_limits(overrides={"video_max_side": 200}), "video")
    assert [v.value for v in found] == [320]


def test_check_limits_for_audio(media):
    p = probe(make_audio(media / "long voice.flac", seconds=3))
    found = {v.limit for v in check_limits(p, load_limits(overrides={"audio_max_seconds": 2.5}), "audio")}
    assert found == {"audio_containers", "audio_max_seconds"}


# ---- MediaInfo value parsing ---------------------------------------------------------------------------------


@given(st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False)))
def test_number_reads_ints_floats_and_their_strings(x):
    assert probe_module._number(x) == pytest.approx(float(x))
    assert probe_module._number(str(x)) == pytest.approx(float(x))


@given(st.integers(1, 192000), st.integers(1, 192000))
def test_number_takes_the_first_of_a_slash_list(a, b):
    assert probe_module._number(f"{a} / {b}") == a


# ---- CLI -----------------------------------------------------------------------------------------------------


def _lipsync(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("lipsync")), *args], capture_output=True, text=True)


def test_cli_table_and_exit_code(media):
    good = make_video(media / "cli ok.mp4")
    long = make_video(media / "cli long.mp4", seconds=31, width=64, height=48, fps=5, audio=False)
    mkv = make_video(media / "cli.mkv", seconds=1, width=64, height=48)
    out = _lipsync("probe", str(good), str(long), str(mkv))
    assert out.returncode == 0, out.stderr
    assert "within the limits of every provider" in out.stdout
    assert "video_max_seconds (every provider): 31.00 s is over the 30 s limit" in out.stdout
    assert "video_containers (every provider): container mkv is not accepted (only mp4, mov)" in out.stdout


def test_cli_json_is_one_document_and_bad_files_exit_6(media):
    good = make_video(media / "cli json.mp4")
    out = _lipsync("probe", "--json", "--provider", "fal", str(good), str(media / "missing.mp4"))
    assert out.returncode == 6
    doc = json.loads(out.stdout)
    assert doc["ok"] is False
    first, second = doc["files"]
    assert first["probe"]["video"]["codec"] == "AVC" and first["violations"] == {"fal": []}
    assert second["error"]["exit_code"] == 6 and "no such file" in second["error"]["message"]


@given(
    st.integers(1, 90000),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 5000)), min_size=1, max_size=40),
    st.text(max_size=30),
)
def test_framecrc_timing_is_the_earliest_frame_to_the_latest_end(den, frames, junk):
    rows = "".join(f"0, {pts}, {pts}, {dur}, 100, 0xdeadbeef\n" for pts, dur in frames)
    # ignored: a packet without a timestamp, and one decoded only to reach an edit list's start
    no_pts = f"0, 0, {-(2**63)}, 1, 100, 0xdeadbeef\n"
    discarded = "0, -9000, -8000, 500, 100, 0xdeadbeef, F=0x5\n"
    timing = probe_module.parse_framecrc(f"#software: Lavf\n#tb 0: 1/{den}\n{no_pts}{discarded}{rows}#{junk}\n")
    assert timing.packets == len(frames)
    assert timing.start == pytest.approx(min(p for p, _ in frames) / den)
    assert timing.end == pytest.approx(max(p + d for p, d in frames) / den)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "#tb 0: 1/25\n",
        "0, 1, 2, 3\n",
        "#tb 0: 1/0\n0, 0, 0, 1\n",
        "#tb 0: x\n0, 0, 0, 1\n",
        "#tb 0: 1/25\n0, a, b, c\n",
    ],
)
def test_framecrc_without_a_time_base_or_frames_gives_nothing(text):
    assert probe_module.parse_framecrc(text) is None


def test_a_picture_behind_an_edit_list_starts_late_on_the_file_timeline(media):
    p = probe(make_offset_streams(media / "late picture.mp4", seconds=1, video_delay=0.3))
    assert p.video.start == pytest.approx(0.3, abs=0.03) and p.video.duration == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("span, outcome", [(2.0, "ok"), (1.8, "ok"), (40.0, "jump"), (0.2, "damaged")])
def test_packet_timestamps_far_from_the_header_are_damage(media, monkeypatch, span, outcome):
    """What ffmpeg reads decides the length, unless it is far from the header: a jump is kept at the header's
    length with a warning, a shortfall (a damaged index: ffmpeg reads only the start) is refused."""
    clip = make_video(media / f"timed {span}.mp4", seconds=2, width=64, height=48)
    monkeypatch.setattr(probe_module, "_packet_timing", lambda path, index: probe_module.PacketTiming(0.0, span, 9))
    if outcome == "damaged":
        with pytest.raises(InputError, match=r"damaged: ffmpeg can read only 0.20 s of the 2.00 s"):
            probe(clip)
        return
    p = probe(clip)
    assert p.video.duration == pytest.approx(2.0 if outcome == "jump" else span)
    assert any("timestamps jump" in w for w in p.warnings) == (outcome == "jump")


def test_a_transport_stream_without_a_declared_rate_gets_the_rate_its_frames_show(tmp_path):
    """MediaInfo gives no frame rate for short H.264 in MPEG-TS; guessing 25 fps would drop a 30 fps clip's frames."""
    src = make_video(tmp_path / "clip.ts", seconds=2, fps=30, vcodec="libx264")
    assert media_info(src)["Video"][0].frame_rate is None  # the case this test is about
    assert probe(src).video.fps == 30.0


def test_a_conformed_30_fps_transport_stream_keeps_every_frame(tmp_path):
    src = make_video(tmp_path / "clip.ts", seconds=2, fps=30, vcodec="libx264")
    out = execute_video(plan_video(probe_video(src), load_limits()), tmp_path / "out.mp4")
    track = media_info(out.path)["Video"][0]
    assert float(track.frame_rate) == 30.0
    assert abs(int(track.frame_count) - 60) <= 1


def test_a_file_changed_since_its_probe_is_read_again(tmp_path: Path) -> None:
    """Probes of unchanged files are kept; a rewrite in place, or another file renamed over the path, is not
    taken for the file it replaced."""
    clip = make_video(tmp_path / "clip.mp4", seconds=1.0)
    assert probe(clip).duration == pytest.approx(1.0, abs=0.05)
    make_video(tmp_path / "clip.mp4", seconds=2.0)  # written in place
    assert probe(clip).duration == pytest.approx(2.0, abs=0.05)
    make_video(tmp_path / "other.mp4", seconds=3.0).replace(clip)
    again = probe(clip)
    assert again.duration == pytest.approx(3.0, abs=0.05)
    assert again.video is not None and again.video.duration == pytest.approx(3.0, abs=0.05)
