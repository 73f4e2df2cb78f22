"""Script fit for the talking portrait: which clip length holds the speech, and the chain of clips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ValidationError
from pipeline.limits import load_image_limits
from pipeline.speech import estimate_speech_seconds
from pipeline.stages.script_fit import allowed_durations, choose_duration, plan_chain, room
from pipeline.stages.text import normalize_text

LIMITS = load_image_limits("aimlapi")
MAX_CHARS = 200
resolutions = st.sampled_from(LIMITS.resolutions)
words = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=12).filter(str.strip)
sentences = st.lists(words, min_size=1, max_size=6).map(" ".join)
scripts = st.lists(st.tuples(sentences, st.sampled_from([".", ",", "!", "?", ";", ""])), min_size=1, max_size=25).map(
    lambda parts: " ".join(s + mark for s, mark in parts)
)


def test_1080p_takes_no_8_second_clip():
    assert allowed_durations("1080p", LIMITS) == (5,)
    assert allowed_durations("720p", LIMITS) == (5, 8)
    with pytest.raises(
        ValidationError, match="1080p does not take 8 s clips: use --duration 5 \\(it is allowed at 360p, 540p, 720p\\)"
    ):
        choose_duration("Hello there.", "1080p", LIMITS, MAX_CHARS, requested=8)


def test_an_unknown_resolution_is_refused():
    with pytest.raises(ValidationError, match="resolution '4k' is not one of 360p, 540p, 720p, 1080p"):
        choose_duration("Hello.", "4k", LIMITS, MAX_CHARS)


def test_a_short_line_gets_5_seconds_a_longer_one_8():
    assert choose_duration("Hello and welcome.", "720p", LIMITS, MAX_CHARS).duration == 5
    line = "Hello and welcome. This is our latest news update, and here are the headlines."  # seed 003's line
    fit = choose_duration(line, "720p", LIMITS, MAX_CHARS)
    assert fit.duration == 8 and fit.speech_seconds > room(5, LIMITS) and "8 s clip" in fit.reason


def test_too_long_for_1080p_names_the_estimate_and_every_fix():
    line = "Hello and welcome. This is our latest news update, and here are the headlines."
    with pytest.raises(ValidationError) as caught:
        choose_duration(line, "1080p", LIMITS, MAX_CHARS)
    message = str(caught.value)
    speech = estimate_speech_seconds(line)
    assert f"about {speech:.1f} s to speak; a 5 s clip at 1080p holds 4.2 s" in message
    assert "shorten the script to about" in message and "360p, 540p, 720p" in message and "--chain" in message


def test_more_characters_than_one_tts_text_takes_is_refused_with_the_fix():
    with pytest.raises(ValidationError, match=r"210 characters; one clip's TTS text takes at most 200.*--chain"):
        choose_duration("a" * 210, "720p", LIMITS, MAX_CHARS)


@given(scripts, resolutions, st.none() | st.sampled_from([5, 8]))
def test_the_chosen_clip_holds_the_speech_and_is_the_shortest(text, resolution, requested):
    allowed = allowed_durations(resolution, LIMITS)
    speech = estimate_speech_seconds(normalize_text(text))
    try:
        fit = choose_duration(text, resolution, LIMITS, MAX_CHARS, requested)
    except ValidationError as err:
        too_long = len(normalize_text(text)) > MAX_CHARS or all(
            speech > room(d, LIMITS) for d in ([requested] if requested else allowed)
        )
        assert (requested is not None and requested not in allowed) or too_long, str(err)
        return
    assert fit.duration in allowed and speech <= fit.room_seconds + 1e-9
    assert requested in (None, fit.duration)
    if requested is None:
        assert all(speech > room(d, LIMITS) for d in allowed if d < fit.duration)


@settings(max_examples=60, deadline=None)
@given(scripts, resolutions)
def test_a_chain_cuts_the_script_into_clips_that_each_fit(text, resolution):
    plan = plan_chain(text, resolution, LIMITS, MAX_CHARS)
    assert "".join(c.text for c in plan.clips) == normalize_text(text)
    for clip in plan.clips:
        assert clip.fit.duration in allowed_durations(resolution, LIMITS)
        assert estimate_speech_seconds(clip.spoken) <= room(clip.fit.duration, LIMITS) + 1e-9
        assert len(clip.spoken) <= MAX_CHARS and clip.spoken
    assert [c.index for c in plan.clips] == list(range(len(plan.clips)))


def test_a_40_second_script_is_chained_at_sentence_ends():
    script = " ".join(f"Sentence number {n} tells the viewer one more small thing about the product." for n in range(9))
    assert estimate_speech_seconds(script) > 40
    plan = plan_chain(script, "720p", LIMITS, MAX_CHARS)
    assert len(plan.clips) >= 6 and plan.seconds >= 40
    assert all(c.spoken.endswith(".") for c in plan.clips)
    assert {c.fit.duration for c in plan.clips} <= {5, 8}
