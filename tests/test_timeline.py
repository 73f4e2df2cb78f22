"""The editor's cut list: timeline.otio and cuts.edl read back with OpenTimelineIO itself."""

from __future__ import annotations

from fractions import Fraction

import opentimelineio as otio
import pytest
from opentimelineio.opentime import from_timecode, to_timecode

from pipeline.errors import InputError
from pipeline.ffmpeg import ffmpeg_exe, run_ffmpeg
from pipeline.limits import load_limits
from pipeline.stages.cuts import CutCues, plan_cuts
from pipeline.stages.timeline import build_timeline, source_timecode, write_timeline

LIMITS = load_limits()


def _clip(path, rate: str, *, timecode: str | None = None):
    run_ffmpeg(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=d=1:r={rate}:s=160x120",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            *(["-timecode", timecode] if timecode else []),
            str(path),
        ],
        what=f"making {path.name}",
    )
    return path


def _plan(fps, seconds=95.0):
    pauses = tuple((t, t + 0.5) for t in range(4, int(seconds), 5))
    return plan_cuts(seconds, fps, LIMITS, cues=CutCues(pauses=pauses))


@pytest.mark.parametrize("fps, timecode", [(29.97, "01:00:00;00"), (25.0, "10:00:00:00"), (23.976, None)])
def test_timeline_reads_back_covering_the_source_with_its_timecode(tmp_path, fps, timecode):
    plan = _plan(fps)
    source = tmp_path / "my interview.mov"
    source.touch()
    files = write_timeline(build_timeline(plan, source, start_timecode=timecode), tmp_path / "job")
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["cuts.edl", "timeline.otio"]
    rate = float(plan.rate)
    first = from_timecode(timecode or "00:00:00:00", rate)

    back = otio.adapters.read_from_file(str(files.otio))
    clips = list(back.find_clips())
    assert len(clips) == len(plan.segments) > 1
    position = otio.opentime.RationalTime(0, rate)
    for clip, seg in zip(clips, plan.segments, strict=True):
        record = clip.range_in_parent()
        assert record.start_time == position  # no gap, no overlap
        assert record.duration.rate == pytest.approx(rate) and record.duration.value == seg.frames
        assert clip.source_range.start_time.value == first.value + seg.start_frame
        assert clip.media_reference.target_url == source.absolute().as_uri()
        assert clip.metadata["lipsync"]["cut_reason"] == seg.cut.reason
        position = record.end_time_exclusive()
    assert back.duration().value == plan.frames and back.duration().rate == pytest.approx(rate)

    edl = otio.adapters.read_from_file(str(files.edl), rate=rate)
    edl_clips = list(edl.find_clips())
    assert [c.source_range.start_time.value for c in edl_clips] == [first.value + s.start_frame for s in plan.segments]
    assert [c.source_range.duration.value for c in edl_clips] == [s.frames for s in plan.segments]
    assert edl.duration().value == plan.frames
    assert {c.metadata["cmx_3600"]["reel"] for c in edl_clips} == {"myinterv"}
    assert to_timecode(first, rate) in files.edl.read_text()


def test_source_timecode_is_read_from_the_file_and_absent_without_one(tmp_path):
    with_tc = _clip(tmp_path / "tc.mov", "30000/1001", timecode="01:02:03;04")
    assert source_timecode(with_tc) == "01:02:03;04"
    assert source_timecode(_clip(tmp_path / "plain.mp4", "25")) is None
    timeline = build_timeline(_plan(29.97, 40.0), with_tc, start_timecode=source_timecode(with_tc))
    assert timeline.find_clips()[0].source_range.start_time.value == 111582  # drop-frame count


def test_clip_metadata_is_carried(tmp_path):
    plan = _plan(25.0, 40.0)
    extra = [{"provider_job": f"job-{i}"} for i in range(len(plan.segments))]
    timeline = build_timeline(plan, tmp_path / "s.mp4", clip_metadata=extra)
    assert [c.metadata["lipsync"]["provider_job"] for c in timeline.find_clips()] == ["job-0", "job-1"]


def test_a_timecode_the_rate_cannot_hold_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="timecode"):
        build_timeline(_plan(25.0, 40.0), tmp_path / "s.mp4", start_timecode="01:00:00:40")


def test_nothing_is_written_unless_both_files_render(tmp_path):
    timeline = build_timeline(_plan(25.0, 40.0), tmp_path / "s.mp4")
    timeline.tracks.append(timeline.tracks[0].clone())  # the EDL writer takes one video track only
    with pytest.raises(otio.exceptions.NotSupportedError):
        write_timeline(timeline, tmp_path / "job")
    assert not (tmp_path / "job").exists() or not any((tmp_path / "job").iterdir())


def test_rates_stay_exact_in_the_timeline():
    plan = _plan(29.97)
    assert plan.rate == Fraction(30000, 1001)
    clip = build_timeline(plan, "/tmp/x.mov").find_clips()[0]
    assert clip.source_range.duration.rate == pytest.approx(30000 / 1001, rel=1e-12)
