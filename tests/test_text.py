"""TTS text normalization and chunking: exact join contract, limits, and where the cuts fall."""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from pipeline.errors import ValidationError
from pipeline.speech import estimate_speech_seconds
from pipeline.stages.text import chunk_text, normalize_text, sentence_end_times, spoken
from pipeline.voices import resolve_voice

ENGLISH = st.text(alphabet="abcdefghij ,.!?;:'\n\t", min_size=1, max_size=800)
CHINESE = st.text(alphabet="你好世界我们是中国人。！？，、：；", min_size=1, max_size=600)
MIXED = st.text(alphabet="abc XYZ.,!你好。，！1234\u00a0\u0301é", min_size=1, max_size=800)
NO_SPACES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=900)
ANY_TEXT = st.one_of(ENGLISH, CHINESE, MIXED, NO_SPACES, st.text(min_size=1, max_size=500))


def assert_chunk_contract(text: str, chunks: list[str], max_chars: int, max_seconds: float) -> None:
    assert "".join(chunks) == normalize_text(text)
    for chunk in chunks:
        words = spoken(chunk)
        assert words, f"empty chunk in {chunks!r}"
        assert chunk == chunk.lstrip()
        assert len(chunk) <= max_chars
        assert estimate_speech_seconds(words) <= max_seconds


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT, max_chars=st.integers(min_value=2, max_value=250))
@example(text="Hello world. " * 40, max_chars=200)
@example(text="x" * 1000, max_chars=200)
def test_chunks_rejoin_and_fit_the_limits(text, max_chars):
    if not normalize_text(text):
        with pytest.raises(ValidationError, match="empty"):
            chunk_text(text, max_chars, 30.0)
        return
    chunks = chunk_text(text, max_chars, 30.0)
    assert_chunk_contract(text, chunks, max_chars, 30.0)


@settings(max_examples=100, deadline=None)
@given(text=CHINESE, max_seconds=st.floats(min_value=1.0, max_value=30.0))
def test_chinese_chunks_fit_the_speech_time(text, max_seconds):
    if not normalize_text(text):
        return
    chunks = chunk_text(text, 200, max_seconds)
    assert_chunk_contract(text, chunks, 200, max_seconds)


def test_normalize_collapses_every_kind_of_whitespace():
    assert normalize_text("  Hello\n\n\tworld\u00a0 again \r\n") == "Hello world again"
    assert normalize_text("e\u0301") == "é"  # NFC: one code point, so the count is what the user sees


def test_cuts_prefer_sentence_ends_over_clauses_and_spaces():
    text = "One two three, four five. Six seven, eight nine ten eleven twelve."
    chunks = chunk_text(text, 40, 30.0)
    assert chunks == ["One two three, four five. ", "Six seven, eight nine ten eleven twelve."]


def test_closing_quotes_stay_with_their_sentence():
    chunks = chunk_text('He said "stop." Then he left, quietly. And more words here', 20, 30.0)
    assert chunks == ['He said "stop." ', "Then he left, ", "quietly. ", "And more words here"]


def test_clause_marks_then_spaces_then_hard_cut():
    assert chunk_text("alpha beta, gamma delta epsilon", 20, 30.0)[0] == "alpha beta, "
    assert chunk_text("alpha beta gamma delta epsilon", 20, 30.0)[0] == "alpha beta gamma "
    assert chunk_text("a" * 25, 20, 30.0) == ["a" * 20, "a" * 5]


def test_decimal_points_and_inner_commas_are_not_boundaries():
    chunks = chunk_text("Pi is 3.14159265 and e is 2.71828,1828 roughly ok", 30, 30.0)
    assert "".join(chunks) == "Pi is 3.14159265 and e is 2.71828,1828 roughly ok"
    assert not any(spoken(c).endswith("2.71828,") for c in chunks)
    assert not any(spoken(c).endswith("3.") for c in chunks)


def test_chinese_cuts_after_full_width_marks():
    text = "我们今天讨论一下这个问题。" * 3 + "好的，谢谢大家！"
    chunks = chunk_text(text, 30, 30.0)
    assert all(spoken(c)[-1] in "。！" for c in chunks)
    assert "".join(chunks) == text


def test_chinese_is_limited_by_speech_time_not_characters():
    text = "这是一个很长的句子" * 30  # 270 CJK characters, ~60 s of speech
    chunks = chunk_text(text, 200, 30.0)
    assert len(chunks) >= 2
    assert all(estimate_speech_seconds(c) <= 30.0 for c in chunks)


def test_a_combining_mark_stays_with_its_letter():
    text = "a" * 19 + "\u0915\u094d" + "b" * 10  # Devanagari KA + virama (does not compose under NFC)
    chunks = chunk_text(text, 20, 30.0)
    assert "".join(chunks) == text
    assert chunks[1][0] != "्"


def test_a_one_character_limit_is_refused():
    with pytest.raises(ValidationError, match="cannot hold"):
        chunk_text("a b", 1, 30.0)


def test_a_word_ending_at_the_limit_does_not_push_its_space_into_the_next_chunk():
    chunks = chunk_text("x" * 10 + " " + "y" * 5, 10, 30.0)
    assert chunks == ["x" * 9, "x yyyyy"]  # the hard cut moves back one letter rather than overflow


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_rejected(text):
    with pytest.raises(ValidationError) as err:
        chunk_text(text, 200, 30.0)
    assert err.value.exit_code == 6


def test_speaker_names_resolve_with_did_you_mean():
    assert resolve_voice("emily") == "Emily"
    assert resolve_voice("14") == "Ethan"
    with pytest.raises(ValidationError, match="did you mean Oliver"):
        resolve_voice("Olivr")


def test_sentence_end_times_of_a_script():
    text = "One two three. Four five six seven! Eight nine?"
    ends = sentence_end_times(text)
    assert ends == pytest.approx(
        (estimate_speech_seconds("One two three. "), estimate_speech_seconds("One two three. Four five six seven! "))
    )
    stretched = sentence_end_times(text, total_seconds=2 * estimate_speech_seconds(text))
    assert stretched == pytest.approx(tuple(2 * t for t in ends))
    assert sentence_end_times("no sentence mark here") == ()


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, st.floats(1.0, 600.0))
def test_sentence_end_times_rise_inside_the_voice(text, seconds):
    assume(normalize_text(text))
    ends = sentence_end_times(text, total_seconds=seconds)
    assert list(ends) == sorted(ends) and all(0 <= t <= seconds for t in ends)
