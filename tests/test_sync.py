"""The length policy: what each --sync-mode decides, and that no plan breaks a duration limit."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.limits import load_limits
from pipeline.stages.sync import SyncMode, max_job_seconds, plan_sync, plan_text_spans

LIMITS = load_limits()
SECONDS = st.floats(min_value=0.1, max_value=120.0, allow_nan=False)
MODES = st.sampled_from(list(SyncMode))


@settings(max_examples=300, deadline=None)
@given(video=SECONDS, audio=SECONDS, mode=MODES)
def test_every_plan_fits_the_limit_and_is_consistent(video, audio, mode):
    plan = plan_sync(video, audio, mode, LIMITS)
    cap = max_job_seconds(LIMITS)
    assert 0 < plan.duration <= cap
    expected = {SyncMode.CUT: min(video, audio), SyncMode.LOOP: audio, SyncMode.BOUNCE: audio, SyncMode.PAD: video}
    assert plan.duration == pytest.approx(min(expected[mode], cap))
    assert (plan.video_extend is not None) == (mode in (SyncMode.LOOP, SyncMode.BOUNCE) and plan.duration > video)
    assert plan.audio_pad_seconds == pytest.approx(max(0.0, plan.duration - audio))
    if mode is SyncMode.CUT:
        assert plan.audio_pad_seconds == 0 and plan.video_extend is None
    assert bool(plan.warnings) == (expected[mode] > cap)
    assert plan.reasons


def test_bounce_extends_a_short_video_to_the_voice():
    plan = plan_sync(4.0, 9.5, "bounce", LIMITS)
    assert (plan.duration, plan.video_extend, plan.audio_pad_seconds) == (9.5, "bounce", 0.0)
    assert not plan.video_trimmed and not plan.audio_trimmed


def test_pad_mode_pads_the_audio_to_the_video():
    plan = plan_sync(12.0, 5.0, SyncMode.PAD, LIMITS)
    assert plan.duration == 12.0 and plan.video_extend is None
    assert plan.audio_pad_seconds == pytest.approx(7.0)


def test_over_limit_pair_is_cut_with_a_warning_naming_the_cut():
    plan = plan_sync(45.0, 40.0, "cut", LIMITS)
    assert plan.duration == 30.0 and plan.video_trimmed and plan.audio_trimmed
    assert "cut at 30 s" in plan.warnings[0] and "10.000 s dropped" in plan.warnings[0]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        plan_sync(1.0, 2.0, "stretch", LIMITS)


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(min_value=0, max_value=10),
    length=st.floats(min_value=0.5, max_value=100),
    speech=st.lists(st.floats(min_value=0.2, max_value=30), min_size=1, max_size=8),
    mode=MODES,
)
def test_text_spans_are_consecutive_proportional_and_within_limits(start, length, speech, mode):
    end = start + length
    spans = plan_text_spans(start, end, speech, mode, LIMITS)
    assert [s.index for s in spans] == list(range(len(speech)))
    assert spans[0].start == start
    total = sum(speech)
    for span, nxt in itertools.pairwise(spans):
        assert span.end <= nxt.start + 1e-9
    for span, est in zip(spans, speech, strict=True):
        share = length * est / total
        assert 0 < span.duration <= max_job_seconds(LIMITS) + 1e-9
        assert span.end - span.start == pytest.approx(min(share, max_job_seconds(LIMITS)) if not span.extend else share)
        if span.extend:
            assert mode in (SyncMode.LOOP, SyncMode.BOUNCE) and span.duration == pytest.approx(min(est, 30.0))
    if all(not s.warnings for s in spans):
        assert math.isclose(spans[-1].end, end)


def test_a_long_video_with_one_short_chunk_is_capped():
    (span,) = plan_text_spans(0.0, 100.0, [5.0], "bounce", LIMITS)
    assert (span.start, span.end, span.duration, span.extend) == (0.0, 30.0, 30.0, None)
    assert "cut at 30.000 s" in span.warnings[0]


def test_lengths_equal_but_for_float_noise_need_no_padding():
    """0.1 s of video read as 0.10000000000000002 s must not pad the voice by 1e-17 s (hypothesis found it)."""
    for mode in ("cut", "loop", "bounce", "pad"):
        plan = plan_sync(0.10000000000000002, 0.1, mode, load_limits())
        assert plan.audio_pad_seconds == 0 and plan.video_extend is None
