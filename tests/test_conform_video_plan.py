"""plan_video() is pure: properties over any probe, limits and options (hypothesis), plus the messages it gives."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError, ValidationError
from pipeline.limits import Limits, load_limits
from pipeline.stages.conform_video import (
    COPY_SIZE_MARGIN,
    FRAME_ROUNDING,
    SHARED_READ_BYTES,
    SIZE_MARGIN,
    VideoOptions,
    leg_reads,
    lower_cap,
    output_fps,
    plan_video,
)
from pipeline.stages.probe import AudioStream, MediaProbe, VideoStream

CONTAINERS = ["mp4", "mov", "mkv", "webm", "mpegts", "avi"]


@st.composite
def video_streams(draw) -> VideoStream:
    width, height = draw(st.integers(2, 8192)), draw(st.integers(2, 8192))
    rotation = draw(st.sampled_from([0, 0, 90, 180, 270]))
    par = draw(st.sampled_from([1.0, 1.0, 8 / 9, 32 / 27, 4 / 3]))
    shown = (max(1, round(width * par)), height)
    if rotation in (90, 270):
        shown = shown[::-1]
    fps = draw(st.sampled_from([None, 12.5, 23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0, 119.88, 240.0]))
    vfr = fps is None or draw(st.booleans())
    return VideoStream(
        codec=draw(st.sampled_from(["AVC", "AVC", "HEVC", "ProRes", "MPEG Video", "VP9"])),
        profile=draw(st.sampled_from(["High", "High", "Main", "Constrained Baseline", None])),
        width=width,
        height=height,
        display_width=shown[0],
        display_height=shown[1],
        rotation=rotation,
        fps=fps,
        frame_rate_mode="VFR" if vfr else "CFR",
        scan_type=draw(st.sampled_from(["progressive", "progressive", "interlaced", "mbaff", "unknown"])),
        bit_depth=draw(st.sampled_from([8, 8, 10, 12, None])),
        chroma_subsampling=draw(st.sampled_from(["4:2:0", "4:2:0", "4:2:2", "4:4:4", None])),
        pixel_aspect_ratio=par,
        hdr_transfer=draw(st.sampled_from([None, None, "PQ", "HLG"])),
        duration=None,
        frame_count=None,
        index=draw(st.sampled_from([0, 0, 0, 1])),
        start=draw(st.sampled_from([0.0, 0.0, 0.0, 0.08, 0.3])),
        primaries=draw(st.sampled_from([None, None, "BT.709", "BT.601 PAL", "BT.2020"])),
        matrix=draw(st.sampled_from([None, None, "BT.709", "BT.601", "BT.2020 non-constant"])),
        color_range=draw(st.sampled_from([None, "Limited", "Full"])),
        hdr_format=draw(st.sampled_from([None, None, None, "SMPTE ST 2086"])),
    )


@st.composite
def probes(draw) -> MediaProbe:
    v = draw(video_streams())
    duration = draw(st.floats(0.2, 120.0))
    audio = draw(
        st.one_of(
            st.none(),
            st.builds(
                AudioStream,
                codec=st.sampled_from(["AAC", "PCM", "Opus", "MPEG Audio"]),
                channels=st.integers(1, 8),
                sample_rate=st.sampled_from([22050, 44100, 48000, 96000]),
                duration=st.just(duration),
                bit_depth=st.none(),
            ),
        )
    )
    return MediaProbe(
        path=Path("/media/clip ü.mov"),
        container=draw(st.sampled_from(CONTAINERS)),
        duration=duration,
        size_bytes=draw(st.integers(10_000, 400_000_000)),
        video=replace(v, duration=duration),
        audio=audio,
    )


BASE_LIMITS = load_limits()
limits_st = st.builds(
    lambda side, mb, sec, containers: BASE_LIMITS.model_copy(
        update={"video_max_side": side, "video_max_bytes": mb, "video_max_seconds": sec, "video_containers": containers}
    ),
    st.integers(16, 4096),
    st.integers(2_000_000, 200_000_000),
    st.floats(1.0, 60.0),
    st.sampled_from([("mp4", "mov"), ("mp4",), ("mov",)]),
)


@st.composite
def options(draw, p: MediaProbe, limits: Limits) -> VideoOptions:
    start = draw(st.one_of(st.none(), st.floats(0.0, p.duration * 0.9)))
    end = draw(st.one_of(st.none(), st.floats((start or 0.0) + 0.05, p.duration * 1.2)))
    target = draw(st.one_of(st.none(), st.floats(0.1, limits.video_max_seconds)))
    extend = draw(st.sampled_from([None, "loop", "bounce"]))
    return VideoOptions(
        start=start,
        end=end,
        target_duration=target,
        extend=extend,
        keep_audio=draw(st.booleans()),
        force_transcode=draw(st.booleans()),
    )


@st.composite
def cases(draw) -> tuple[MediaProbe, Limits, VideoOptions]:
    p, limits = draw(probes()), draw(limits_st)
    return p, limits, draw(options(p, limits))


def _window(p: MediaProbe, opts: VideoOptions) -> tuple[float, float]:
    start = opts.start or 0.0
    return start, min(p.duration, opts.end) if opts.end is not None else p.duration


def _plan_or_refusal(p, limits, opts):
    start, end = _window(p, opts)
    needs_extend = opts.target_duration is not None and opts.target_duration > end - start
    if needs_extend and opts.extend is None:
        with pytest.raises(ValidationError, match="shorter than the target"):
            plan_video(p, limits, opts)
        return None
    fps, _ = output_fps(p.video, opts.max_fps)
    if needs_extend and (end - start) * fps < 1 - 1e-6:
        with pytest.raises(InputError, match="shorter than one frame"):
            plan_video(p, limits, opts)
        return None
    return plan_video(p, limits, opts)


def _should_copy(p: MediaProbe, limits: Limits, opts: VideoOptions) -> bool:
    """The spec, written out independently: copy only when every condition holds."""
    v = p.video
    return (
        not opts.force_transcode
        and p.container in ("mp4", "mov")
        and p.container in limits.video_containers
        and v.codec == "AVC"
        and v.profile == "High"
        and v.bit_depth == 8
        and v.chroma_subsampling == "4:2:0"
        and v.start == 0.0
        and v.index == 0
        and v.frame_rate_mode == "CFR"
        and v.fps is not None
        and v.fps <= opts.max_fps * 1.01
        and v.scan_type == "progressive"
        and v.rotation == 0
        and v.pixel_aspect_ratio == 1.0
        and v.hdr_transfer is None
        and v.primaries in (None, "BT.709")
        and v.matrix in (None, "BT.709")
        and v.color_range != "Full"
        and v.hdr_format is None
        and v.width % 2 == 0
        and v.height % 2 == 0
        and max(v.width, v.height) <= limits.video_max_side
        and p.size_bytes <= limits.video_max_bytes * COPY_SIZE_MARGIN
        and p.duration <= limits.video_max_seconds
        and opts.start in (None, 0.0)
        and (opts.end is None or opts.end >= p.duration)
        and (opts.target_duration is None or opts.target_duration == p.duration)
    )


@settings(max_examples=300, deadline=None)
@given(probes(), limits_st)
def test_output_size_is_even_within_the_limit_never_upscaled_and_keeps_the_aspect(p, limits):
    plan = plan_video(p, limits)
    v = p.video
    assert plan.width % 2 == 0 and plan.height % 2 == 0
    assert max(plan.width, plan.height) <= limits.video_max_side
    assert plan.width <= max(2, v.display_width) and plan.height <= max(2, v.display_height)
    scale = min(1.0, limits.video_max_side / max(v.display_width, v.display_height))
    assert abs(plan.width - v.display_width * scale) <= 2
    assert abs(plan.height - v.display_height * scale) <= 2
    if plan.mode == "copy":
        assert (plan.width, plan.height) == (v.width, v.height) and not plan.scale


@settings(max_examples=300, deadline=None)
@given(cases())
def test_copy_only_when_every_condition_holds(case):
    p, limits, opts = case
    plan = _plan_or_refusal(p, limits, opts)
    if plan is None:
        return
    assert (plan.mode == "copy") == _should_copy(p, limits, opts)
    if plan.mode == "copy":
        assert plan.rotation == 0 and not plan.deinterlace and plan.tonemap is None and plan.maxrate is None
        assert plan.audio in ("copy", "aac", "none")
    else:
        assert plan.fps and plan.crf is not None and plan.audio in ("aac", "none")
        assert plan.fps <= opts.max_fps
        assert plan.rotation == p.video.rotation
        assert plan.deinterlace == (p.video.scan_type in ("interlaced", "mbaff"))
        assert plan.tonemap == p.video.hdr_transfer


@settings(max_examples=300, deadline=None)
@given(cases())
def test_timeline_stays_in_the_window_and_under_the_limit(case):
    p, limits, opts = case
    plan = _plan_or_refusal(p, limits, opts)
    if plan is None:
        return
    start, end = _window(p, opts)
    assert plan.duration <= limits.video_max_seconds + 1e-6
    assert math.isclose(sum(leg.duration for leg in plan.legs), plan.duration, abs_tol=1e-6)
    slack = FRAME_ROUNDING / (plan.fps or p.video.fps) + 1e-6  # millisecond-rounded windows are forgiven
    for leg in plan.legs:
        assert start - 1e-6 <= leg.start and leg.start + leg.duration <= end + slack
    if opts.target_duration is None:
        assert len(plan.legs) == 1
        cut = end - start > limits.video_max_seconds
        assert cut == any("over the" in w for w in plan.warnings)
        if cut:  # whole frames: a last partial frame would pass the limit
            # float noise of a frame boundary (frames_within forgives 1e-9 s) is not an overshoot
            assert limits.video_max_seconds - 1 / plan.fps < plan.duration <= limits.video_max_seconds + 1e-9
        else:
            assert plan.duration == pytest.approx(end - start)
    else:
        frame = 1 / plan.fps if plan.fps else 0.0
        assert -1e-6 <= opts.target_duration - plan.duration < frame + 1e-6
        reversed_legs = [leg.reverse for leg in plan.legs]
        if opts.extend == "bounce":
            assert reversed_legs == [i % 2 == 1 for i in range(len(plan.legs))]
        else:
            assert not any(reversed_legs)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_the_size_cap_fits_the_byte_limit(case):
    p, limits, opts = case
    plan = _plan_or_refusal(p, limits, opts)
    if plan is None or plan.mode == "copy":
        return
    audio_bits = (plan.audio_bitrate or 0) * plan.duration
    total_bits = plan.maxrate * plan.duration + plan.bufsize + audio_bits
    assert total_bits / 8 <= limits.video_max_bytes * SIZE_MARGIN + 1
    assert 0 < plan.maxrate <= opts.max_bitrate
    retry = lower_cap(plan, int(limits.video_max_bytes * 1.2))
    assert retry.maxrate < plan.maxrate and retry.bufsize < plan.bufsize
    assert retry.decisions[-1].what == "retry"


@settings(max_examples=100, deadline=None)
@given(probes(), limits_st)
def test_plans_are_deterministic_explained_and_serialisable(p, limits):
    plan = plan_video(p, limits)
    assert plan == plan_video(p, limits)
    assert plan.decisions and all(d.what and d.reason for d in plan.decisions)
    json.dumps(plan.to_dict())


# ---- examples: the words a user reads -------------------------------------------------------------------------


def _probe(**video) -> MediaProbe:
    v = VideoStream(
        codec="AVC",
        profile="High",
        width=1920,
        height=1080,
        display_width=1920,
        display_height=1080,
        rotation=0,
        fps=25.0,
        frame_rate_mode="CFR",
        scan_type="progressive",
        bit_depth=8,
        chroma_subsampling="4:2:0",
        pixel_aspect_ratio=1.0,
        hdr_transfer=None,
        duration=45.0,
        frame_count=1125,
    )
    return MediaProbe(
        path=Path("/in/take 1.mp4"),
        container="mp4",
        duration=45.0,
        size_bytes=20_000_000,
        video=replace(v, **video),
        audio=AudioStream("AAC", 2, 48000, 45.0, None),
    )


def test_a_long_clip_is_trimmed_with_a_warning_naming_the_cut():
    plan = plan_video(_probe(), load_limits())
    assert plan.mode == "transcode" and plan.duration == 30.0
    assert plan.warnings == ("take 1.mp4: 45.000 s is over the 30 s limit: kept 0.000-30.000 s, cut 30.000-45.000 s",)


def test_start_and_end_choose_the_window():
    plan = plan_video(_probe(), load_limits(), VideoOptions(start=10, end=50))
    assert plan.legs[0].start == 10 and plan.duration == 30.0
    assert "kept 10.000-40.000 s, cut 40.000-45.000 s" in plan.warnings[0]


def test_a_compliant_file_is_copied():
    p = _probe(duration=20.0)
    plan = plan_video(replace(p, duration=20.0), load_limits())
    assert plan.mode == "copy" and plan.audio == "copy"
    assert [d.what for d in plan.decisions] == ["copy", "audio", "colour"]  # untagged: tags written in the copy
    assert plan.copy_tags == "bt709"  # 1920x1080: read as BT.709, as players do
    tagged = replace(p, video=replace(p.video, primaries="BT.709", transfer="BT.709", matrix="BT.709"))
    assert plan_video(tagged, load_limits()).copy_tags is None


@pytest.mark.parametrize(
    "colour, blocker",
    [
        ({"matrix": "BT.601", "primaries": "BT.601 PAL"}, "colour BT.601 PAL/BT.601 becomes BT.709"),
        ({"color_range": "Full"}, "full-range colour becomes limited range"),
        ({"hdr_format": "SMPTE ST 2086"}, "HDR metadata (SMPTE ST 2086) on SDR video is dropped"),
    ],
)
def test_colour_other_than_sdr_bt709_limited_is_not_copied(colour, blocker):
    p = _probe(duration=20.0, **colour)
    plan = plan_video(replace(p, duration=20.0), load_limits())
    assert plan.mode == "transcode" and blocker in plan.decisions[0].reason


def test_4k_hevc_10bit_60fps_is_transcoded_to_1080p():
    p = _probe(codec="HEVC", width=3840, height=2160, display_width=3840, display_height=2160, bit_depth=10, fps=60.0)
    plan = plan_video(p, load_limits())
    assert (plan.mode, plan.width, plan.height, plan.fps) == ("transcode", 1920, 1080, 60.0)
    reasons = " | ".join(d.reason for d in plan.decisions)
    assert "HEVC 10-bit 4:2:0 becomes H.264 High 8-bit 4:2:0" in reasons
    assert "3840x2160 becomes 1920x1080: longest side 3840 px is over the 1920 px limit" in reasons


def test_portrait_phone_clip_stays_portrait():
    p = _probe(width=3840, height=2160, display_width=2160, display_height=3840, rotation=90)
    plan = plan_video(p, load_limits())
    assert (plan.width, plan.height, plan.rotation) == (1080, 1920, 90)


def test_bad_window_and_targets_are_refused():
    with pytest.raises(InputError, match="nothing to use between 50 s and 45 s"):
        plan_video(_probe(), load_limits(), VideoOptions(start=50))
    with pytest.raises(ValidationError, match="outside"):
        plan_video(_probe(), load_limits(), VideoOptions(target_duration=31))
    with pytest.raises(ValidationError, match="no extend mode"):
        plan_video(_probe(), load_limits(), VideoOptions(end=5, target_duration=8))


def test_no_room_for_the_picture_is_refused():
    tiny = load_limits(overrides={"video_max_bytes": 300_000})
    with pytest.raises(ValidationError, match="no room for video"):
        plan_video(_probe(codec="HEVC"), tiny)


def test_bounce_plays_back_from_the_end_of_the_window():
    plan = plan_video(_probe(), load_limits(), VideoOptions(start=2, end=6, target_duration=10, extend="bounce"))
    assert [(leg.start, leg.duration, leg.reverse) for leg in plan.legs] == [
        (2, 4.0, False),
        (2.0, 4.0, True),
        (2, 2.0, False),
    ]
    assert plan.duration == 10.0


@settings(max_examples=200, deadline=None)
@given(cases())
def test_a_repeated_leg_is_read_once_only_when_its_frames_fit_in_memory(case):
    p, limits, opts = case
    plan = _plan_or_refusal(p, limits, opts)
    if plan is None or plan.mode == "copy":
        return
    reads = leg_reads(plan)
    assert len(reads) == len(plan.legs)
    for i, read in enumerate(reads):
        assert read <= i and plan.legs[read] == plan.legs[i] and reads[read] == read
        if read != i:
            assert round(plan.legs[i].duration * plan.fps) * plan.width * plan.height * 1.5 <= SHARED_READ_BYTES


def test_a_one_frame_clip_looped_to_30_s_is_decoded_once():
    p = _probe(duration=0.04, frame_count=1)
    plan = plan_video(replace(p, duration=0.04), load_limits(), VideoOptions(target_duration=30.0, extend="loop"))
    assert len(plan.legs) == 750 and set(leg_reads(plan)) == {0}
    long = plan_video(_probe(), load_limits(), VideoOptions(end=10.0, target_duration=30.0, extend="loop"))
    assert leg_reads(long) == [0, 1, 2]  # 10 s of 1080p does not fit in memory: each repeat is read again


def _frames(plan, start: float) -> list[int]:
    """The source frames (from `start`) the plan's legs play, in order."""
    out: list[int] = []
    for leg in plan.legs:
        first, count = round((leg.start - start) * plan.fps), round(leg.duration * plan.fps)
        frames = list(range(first, first + count))
        out += frames[::-1] if leg.reverse else frames
    return out


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["loop", "bounce"]),
    st.integers(1, 120),  # the window in frames at 25 fps
    st.lists(st.integers(1, 300), min_size=1, max_size=4),  # the segments' lengths in frames
)
def test_segments_of_a_loop_continue_where_the_one_before_ended(extend, window, parts):
    """A long voice over a short clip, split into jobs: each segment's legs pick the loop/bounce up at the frame
    the previous one stopped, so the joined segments play exactly what one unbroken loop/bounce would."""
    start = 2.0
    end = start + window / 25
    limits = load_limits(overrides={"video_max_seconds": 60, "audio_max_seconds": 60})
    whole = plan_video(
        _probe(), limits, VideoOptions(start=start, end=end, target_duration=sum(parts) / 25, extend=extend)
    )
    joined, played = [], 0
    for frames in parts:
        opts = VideoOptions(start=start, end=end, target_duration=frames / 25, extend=extend, extend_from=played)
        joined += _frames(plan_video(_probe(), limits, opts), start)
        played += frames
    expected = _frames(whole, start) if sum(parts) > window else list(range(sum(parts)))
    assert joined == expected
