"""The cut plan for long footage: properties of the planner (hypothesis), and its two measures (shot changes,
loudness envelope) on media generated here."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline.errors import ValidationError
from pipeline.ffmpeg import ffmpeg_exe, run_ffmpeg
from pipeline.limits import load_limits
from pipeline.speech import synth_speech, write_wav
from pipeline.stages.conform_audio import SpeechActivity, speech_activity
from pipeline.stages.conform_video import SIZE_MARGIN, VBV_BUFFER_SECONDS
from pipeline.stages.cuts import (
    BALANCE,
    CUT_ROOM_S,
    CutCues,
    CutKind,
    LoudnessEnvelope,
    frame_rate,
    loudness_levels,
    measure_loudness,
    measure_shot_changes,
    pauses_of,
    plan_cuts,
)

LIMITS = load_limits()
RATES = st.sampled_from([23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0, 12.5])
PRIORITY = [CutKind.PAUSE, CutKind.SENTENCE_END, CutKind.SHOT_CHANGE, CutKind.QUIETEST, CutKind.BALANCED]


@st.composite
def pauses(draw, seconds: float) -> tuple[tuple[float, float], ...]:
    """Disjoint silences, sorted, inside [0, seconds]."""
    points = sorted(draw(st.lists(st.floats(0, seconds, allow_nan=False), max_size=40, unique=True)))
    pairs = list(zip(points[::2], points[1::2], strict=False))
    return tuple((a, b) for a, b in pairs if b > a)


@st.composite
def footage(draw):
    seconds = draw(st.floats(0.05, 600.0, allow_nan=False))
    times = st.lists(st.floats(0, seconds, allow_nan=False), max_size=30)
    levels = draw(st.lists(st.floats(-90, 0, allow_nan=False), max_size=400))
    cues = CutCues(
        pauses=draw(st.one_of(st.just(()), pauses(seconds))),
        sentence_ends=tuple(draw(times)),
        shot_changes=tuple(draw(times)),
        loudness=LoudnessEnvelope(draw(st.sampled_from([0.05, 0.5, 2.0])), tuple(levels)) if levels else None,
    )
    return seconds, draw(RATES), cues


def _frames_in(a: float, b: float, rate: Fraction) -> tuple[int, int]:
    return math.ceil(Fraction(a) * rate), math.floor(Fraction(b) * rate)


def _has_frame(window: tuple[int, int], a: float, b: float, rate: Fraction) -> bool:
    first, last = _frames_in(a, b, rate)
    return max(first, window[0]) <= min(last, window[1])


def _point_in(window: tuple[int, int], t: float, rate: Fraction) -> bool:
    return window[0] <= round(Fraction(t) * rate) <= window[1]


@settings(max_examples=400, deadline=None)
@given(footage(), st.floats(0.2, 12.0), st.one_of(st.none(), st.integers(1_000_000, 60_000_000)))
def test_segments_cover_the_source_inside_every_limit(source, min_seconds, bitrate):
    seconds, fps, cues = source
    rate = frame_rate(fps)
    total = round(Fraction(seconds) * rate)
    assume(total > 0)
    plan = plan_cuts(
        seconds, fps, LIMITS, cues=cues, min_seconds=min_seconds, video_bitrate=bitrate, audio_bitrate=128_000
    )
    segs = plan.segments
    # exact cover, on frame boundaries, and sample-exact audio cut points that meet
    assert plan.frames == total and segs[0].start_frame == 0 and segs[-1].end_frame == total
    for before, after in itertools.pairwise(segs):
        assert before.end_frame == after.start_frame
        assert before.samples(48000)[1] == after.samples(48000)[0]
    assert sum(s.frames for s in segs) == total
    assert [s.index for s in segs] == list(range(len(segs)))
    # every limit, the byte limit counted as conform_video spends it
    cap = min(LIMITS.video_max_seconds, LIMITS.audio_max_seconds)
    for s in segs:
        assert 0 < s.duration <= cap
        if bitrate:
            spent = float(s.duration) * (bitrate + 128_000) + bitrate * VBV_BUFFER_SECONDS
            assert spent <= LIMITS.video_max_bytes * SIZE_MARGIN * 8 * (1 + 1e-9)
    # as few jobs as the limit allows, or one more when those would pin the cuts (and cues could move them);
    # none under the minimum when that is avoidable
    fewest = max(1, math.ceil(total / plan.max_frames))
    if fewest == 1 or cues == CutCues():
        assert len(segs) == fewest
    else:  # just enough more that every cut keeps its room (unless the minimum length forbids one more)
        room = math.floor(min(CUT_ROOM_S * rate, BALANCE * plan.max_frames))
        k = len(segs)
        assert k >= fewest
        assert k * plan.max_frames - total >= (k - 1) * room or (k + 1) * plan.min_frames > total
        assert k == fewest or (k - 1) * plan.max_frames - total < (k - 2) * room
    if len(segs) > 1:
        floor = min(math.ceil(Fraction(min_seconds) * rate), plan.max_frames // 2)
        assert min(s.frames for s in segs) >= floor
        if Fraction(min_seconds) * rate <= plan.max_frames // 2:
            assert min(s.duration for s in segs) >= Fraction(min_seconds) - Fraction(1) / rate
        # balanced: never 30 + 30 + 2
        assert min(s.frames for s in segs) >= max(s.frames for s in segs) / 3
    assert segs[-1].cut.kind is CutKind.SOURCE_END


@settings(max_examples=400, deadline=None)
@given(footage())
def test_each_cut_takes_the_best_cue_its_window_offers(source):
    seconds, fps, cues = source
    rate = frame_rate(fps)
    assume(round(Fraction(seconds) * rate) > 0)
    plan = plan_cuts(seconds, fps, LIMITS, cues=cues)
    for seg in plan.segments[:-1]:
        cut, window = seg.cut, seg.cut.window
        assert window[0] <= cut.frame <= window[1]
        offered = {
            CutKind.PAUSE: any(_has_frame(window, a, b, rate) for a, b in cues.pauses),
            CutKind.SENTENCE_END: any(_point_in(window, t, rate) for t in cues.sentence_ends),
            CutKind.SHOT_CHANGE: any(_point_in(window, t, rate) for t in cues.shot_changes),
            CutKind.QUIETEST: cues.loudness is not None,
            CutKind.BALANCED: True,
        }
        assert cut.kind is next(kind for kind in PRIORITY if offered[kind]) or (
            cut.kind is CutKind.BALANCED and offered[CutKind.QUIETEST]  # an envelope that ends before the window
        )
        if cut.kind is CutKind.PAUSE:
            inside = [(a, b) for a, b in cues.pauses if _has_frame(window, a, b, rate)]
            chosen = [(a, b) for a, b in inside if _frames_in(a, b, rate)[0] <= cut.frame <= _frames_in(a, b, rate)[1]]
            assert chosen and max(b - a for a, b in chosen) == max(b - a for a, b in inside)
        if cut.kind in (CutKind.SENTENCE_END, CutKind.SHOT_CHANGE):
            times = cues.sentence_ends if cut.kind is CutKind.SENTENCE_END else cues.shot_changes
            assert cut.frame in {round(Fraction(t) * rate) for t in times}


@settings(max_examples=300, deadline=None)
@given(
    seconds=st.floats(31.0, 44.0),
    fps=RATES,
    where=st.floats(-0.2, 0.2),
    length=st.floats(0.3, 2.0),
    noise=st.lists(st.floats(0, 44.0), max_size=10),
)
def test_a_pause_near_the_balanced_point_always_wins(seconds, fps, where, length, noise):
    """Two segments: a pause within 20 % of half the source from the middle is where the cut goes, whatever
    sentence ends, shot changes or quiet moments compete with it."""
    middle = seconds / 2
    start = middle + where * middle
    cues = CutCues(
        pauses=((start, start + length),),
        sentence_ends=tuple(noise),
        shot_changes=tuple(noise),
        loudness=LoudnessEnvelope(0.1, tuple(-80.0 for _ in range(500))),
    )
    plan = plan_cuts(seconds, fps, LIMITS, cues=cues)
    rate = frame_rate(fps)
    assert len(plan.segments) == 2
    cut = plan.segments[0].cut
    assert cut.kind is CutKind.PAUSE
    first, last = _frames_in(start, start + length, rate)
    assert first <= cut.frame <= last
    assert "pause" in cut.reason


def test_a_95_second_talk_is_cut_in_its_pauses_and_its_long_stretch_at_the_quietest_moment():
    # sentences of ~3.5 s with 0.6 s pauses, except a 28 s stretch (40-68 s) with no pause at all
    pauses_ = tuple((t, t + 0.6) for t in np.arange(3.5, 95, 4.1) if not 40 <= t <= 68)
    levels = [-20.0] * 1900
    levels[1000] = -45.0  # 50.0-50.05 s, a breath inside the long stretch
    cues = CutCues(pauses=pauses_, loudness=LoudnessEnvelope(0.05, tuple(levels)))
    plan = plan_cuts(95.0, 29.97, LIMITS, cues=cues)
    kinds = [s.cut.kind for s in plan.segments]
    assert len(plan.segments) == 4 and kinds[-1] is CutKind.SOURCE_END
    assert all(s.duration <= 30 for s in plan.segments)
    for seg in plan.segments[:-1]:
        t = float(seg.end)
        if 40 < t < 68:
            assert seg.cut.kind is CutKind.QUIETEST and abs(t - 50.025) < 1 / 29.97
        else:
            assert seg.cut.kind is CutKind.PAUSE and any(a <= t <= b for a, b in pauses_)
    assert CutKind.QUIETEST in kinds


def test_short_sources_are_one_segment_and_nothing_is_refused():
    plan = plan_cuts(1.2, 25, LIMITS)
    assert [(s.start_frame, s.end_frame) for s in plan.segments] == [(0, 30)]
    assert "fits in one segment" in plan.reasons[-1]
    with pytest.raises(ValidationError):
        plan_cuts(0.001, 25, LIMITS)


def test_the_size_budget_shortens_segments_and_says_so():
    plan = plan_cuts(60.0, 25, LIMITS, video_bitrate=20_000_000, audio_bitrate=128_000)
    assert "MB holds" in plan.reasons[0]
    assert len(plan.segments) == 4 and all(s.duration < 19 for s in plan.segments)


def test_a_minimum_over_half_the_segment_is_lowered_with_a_reason():
    limits = load_limits(overrides={"video_max_seconds": 5.0, "audio_max_seconds": 5.0})
    plan = plan_cuts(6.0, 25, limits, min_seconds=4.0)
    assert [s.frames for s in plan.segments] == [75, 75]
    assert any("minimum lowered" in r for r in plan.reasons)


@pytest.mark.parametrize(
    "fps, exact",
    [
        (29.97, Fraction(30000, 1001)),
        (23.976, Fraction(24000, 1001)),
        (59.94, Fraction(60000, 1001)),
        (25.0, Fraction(25)),
        ("30000/1001", Fraction(30000, 1001)),
        (12.5, Fraction(25, 2)),
    ],
)
def test_frame_rates_are_exact(fps, exact):
    assert frame_rate(fps) == exact


def test_ten_minutes_at_2997_do_not_drift():
    plan = plan_cuts(600.0, 29.97, LIMITS)
    assert plan.frames == 17982  # 600 s × 30000/1001, rounded once
    assert plan.segments[-1].end == Fraction(17982 * 1001, 30000)
    assert plan.segments[-1].samples(48000)[1] == 28_799_971  # 599.9994 s at 48 kHz


def test_pauses_of_a_voice_are_its_silences_edges_included():
    activity = SpeechActivity(seconds=10.0, spans=((0.5, 3.0), (3.8, 9.0)), silence_threshold_db=-45.0)
    assert pauses_of(activity) == ((0.0, 0.5), (3.0, 3.8), (9.0, 10.0))
    assert pauses_of(SpeechActivity(seconds=4.0, spans=((0.0, 4.0),), silence_threshold_db=-45.0)) == ()


# ---- measures on generated media -----------------------------------------------------------------------------


def _ffmpeg(argv: list[str], what: str) -> None:
    run_ffmpeg([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *argv], what=what)


def test_shot_changes_are_found_where_the_clip_cuts(tmp_path):
    clip = tmp_path / "three shots.mp4"
    _ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "testsrc2=d=2:r=25:s=320x240[a];smptebars=d=1.6:r=25:s=320x240[b];"
            "mandelbrot=r=25:s=320x240,trim=duration=1.4[c];[a][b][c]concat=n=3",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(clip),
        ],
        "making the three-shot clip",
    )
    shots = measure_shot_changes(clip)
    assert shots.times == pytest.approx([2.0, 3.6], abs=0.5 / 25)
    assert shots.run.argv[0] == ffmpeg_exe()


def test_one_moving_shot_has_no_shot_change(tmp_path):
    clip = tmp_path / "one.mp4"
    _ffmpeg(
        ["-f", "lavfi", "-i", "testsrc2=d=4:r=25:s=320x240", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)],
        "making the one-shot clip",
    )
    assert measure_shot_changes(clip).times == ()


def test_loudness_envelope_finds_the_quiet_stretch_and_the_plan_cuts_there(tmp_path):
    rate = 48000
    t = np.arange(int(2.5 * rate)) / rate
    tone = np.sin(2 * np.pi * 440 * t)
    amplitude = np.where((t >= 1.0) & (t < 1.5), 0.005, 0.5)
    wav = tmp_path / "voice.wav"
    write_wav(wav, tone * amplitude, rate)
    env = measure_loudness(wav)
    levels = np.array(env.levels_db)
    assert len(levels) == 50
    quiet = levels[21:29]  # 1.05-1.45 s, away from the edges
    loud = np.concatenate([levels[1:19], levels[31:49]])
    assert np.all(np.abs(quiet - 20 * np.log10(0.005 / np.sqrt(2))) < 1.5)
    assert np.all(np.abs(loud - 20 * np.log10(0.5 / np.sqrt(2))) < 0.5)
    limits = load_limits(overrides={"video_max_seconds": 2.0, "audio_max_seconds": 2.0})
    plan = plan_cuts(2.5, 25, limits, cues=CutCues(loudness=env), min_seconds=0.5)
    cut = plan.segments[0].cut
    assert cut.kind is CutKind.QUIETEST and 1.0 <= float(plan.segments[0].end) <= 1.5


def test_loudness_levels_of_silence_and_a_short_last_block():
    levels = loudness_levels(np.concatenate([np.zeros(100), np.full(30, 0.5)]), 1000, 0.1)
    assert levels == pytest.approx((-120.0, 20 * np.log10(0.5)))


def test_a_long_voice_is_cut_in_its_measured_pauses(tmp_path):
    """Real speech activity (conform_audio's measure) and a real loudness envelope drive the plan: 62 s of
    speech-like sound with 0.8 s silences every 6 s, except 20-44 s where it never stops."""
    rate = 16000
    gaps = [t for t in np.arange(6.0, 62.0, 6.0) if not 20 <= t <= 44]
    voice = synth_speech(62.0, sample_rate=rate, seed=3)
    for t in gaps:
        voice[int(t * rate) : int((t + 0.8) * rate)] = 0.0
    wav = tmp_path / "voice.wav"
    write_wav(wav, voice, rate)
    activity = speech_activity(wav, "wav", loudness_lufs=-20.0)
    envelope = measure_loudness(wav)
    plan = plan_cuts(62.0, 25, LIMITS, cues=CutCues(pauses=pauses_of(activity), loudness=envelope))
    assert len(plan.segments) == 3
    kinds = []
    for seg in plan.segments[:-1]:
        t, (lo, hi) = float(seg.end), seg.cut.window
        kinds.append(seg.cut.kind)
        if any(_has_frame((lo, hi), g, g + 0.8, Fraction(25)) for g in gaps):
            assert seg.cut.kind is CutKind.PAUSE and any(g <= t <= g + 0.8 for g in gaps), seg.cut
        else:  # inside the unbroken stretch: at its quietest step (a gap between two synthetic words)
            steps = envelope.levels_db[int(lo / 25 / envelope.step) : int(hi / 25 / envelope.step)]
            assert seg.cut.kind is CutKind.QUIETEST and 20 < t < 44.8
            assert envelope.levels_db[int(t / envelope.step)] <= min(steps) + 3.0
    assert kinds == [CutKind.PAUSE, CutKind.QUIETEST]


@settings(max_examples=100, deadline=None)
@given(footage())
def test_a_plan_read_back_from_its_dict_is_the_same_plan(source):
    import json

    from pipeline.stages.cuts import CutPlan

    seconds, fps, cues = source
    plan = plan_cuts(seconds, fps, LIMITS, cues=cues)
    assert CutPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan  # as a cached prepare keeps it


@pytest.mark.parametrize("seconds, fps", [(600.0, 25), (60.0, 30), (89.5, 24)])
def test_a_source_filling_its_jobs_takes_more_so_every_cut_lands_in_a_pause(seconds, fps):
    """k full segments would pin each cut to its exact mark, mid-sentence; a few more leave every cut room
    for the pauses (0.5 s every 4.2 s), and every cut is in one."""
    pauses_ = tuple((t, t + 0.5) for t in np.arange(3.7, seconds, 4.2))
    plan = plan_cuts(seconds, fps, LIMITS, cues=CutCues(pauses=pauses_))
    assert math.ceil(seconds / 30) < len(plan.segments) <= math.ceil(seconds / 25)
    assert all(s.cut.kind is CutKind.PAUSE for s in plan.segments[:-1])
    assert "more than the fewest" in plan.reasons[-1]
    without_cues = plan_cuts(seconds, fps, LIMITS)
    assert len(without_cues.segments) == math.ceil(seconds / 30)  # nothing to move a cut to: no extra job


@settings(max_examples=200, deadline=None)
@given(
    seconds=st.floats(31.0, 600.0),
    fps=RATES,
    spacing=st.floats(1.5, 4.0),
    length=st.floats(0.2, 1.0),
    phase=st.floats(0.0, 4.0),
)
def test_speech_that_pauses_every_few_seconds_is_cut_only_in_its_pauses(seconds, fps, spacing, length, phase):
    """Pauses closer together than the room every cut keeps: every cut is in a pause, at any length."""
    pauses_ = tuple((t, t + length) for t in np.arange(phase, seconds - length, spacing + length))
    plan = plan_cuts(seconds, fps, LIMITS, cues=CutCues(pauses=pauses_))
    assert all(s.cut.kind is CutKind.PAUSE for s in plan.segments[:-1]), [s.cut for s in plan.segments]
