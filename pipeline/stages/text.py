"""TTS text: normalize a script and cut it into chunks a provider accepts.

Chunk contract (tested by property tests):
- `"".join(chunks) == normalize_text(text)`: nothing is lost or reordered. A boundary that falls on a
  space keeps that space at the end of the earlier chunk, so no chunk starts with whitespace.
- `len(chunk) <= max_chars` (a trailing boundary space included), its `estimate_speech_seconds` is at most
  `max_seconds`, and what is spoken, `chunk.strip()` (see `spoken`), is never empty.
- Cuts are made, in order of preference, after a sentence end (. ! ? … and 。！？), after a clause mark
  (, ; : and 、，；：), at a space, and only as a last resort in the middle of a run of characters.
  Within the allowed window the latest cut of the best kind wins, so chunks are as full as possible.
"""

from __future__ import annotations

import re
import unicodedata

from ..errors import ValidationError
from ..speech import estimate_speech_seconds

_CLOSERS = re.escape("\"'”’)]」』）》")  # quotes and brackets that stay with the mark before them
# ASCII marks only end a sentence/clause when followed by a space ("3.14", "a,b" stay whole);
# full-width marks end one wherever they are, since CJK text has no spaces.


def _mark_pattern(ascii_marks: str, wide_marks: str) -> re.Pattern[str]:
    """A run of ASCII marks that ends a span only before a space, or a run of full-width ones that ends it
    anywhere, with any closers after it and the boundary space. Written to open with one character class
    (the branch is picked by looking back at it), which lets the regex engine skip ahead in C: the chunker
    scans every character of a script with it."""
    a, w = re.escape(ascii_marks), re.escape(wide_marks)
    return re.compile(rf"[{a}{w}](?:(?<=[{a}])[{a}]*[{_CLOSERS}]*(?= )|(?<=[{w}])[{w}]*[{_CLOSERS}]*) ?")


_SENTENCE_END = _mark_pattern(".!?…", "。！？")
_CLAUSE_END = _mark_pattern(",;:", "、，；：")
_SPACE = re.compile(r" ")


def normalize_text(text: str) -> str:
    """NFC, every run of whitespace (newlines, tabs, NBSP...) as one space, no leading/trailing space."""
    return " ".join(unicodedata.normalize("NFC", text).split())  # split(): on every whitespace run, like \s+


def spoken(chunk: str) -> str:
    """The text actually sent for a chunk."""
    return chunk.strip()


def _fits(piece: str, max_chars: int, max_seconds: float) -> bool:
    return len(piece) <= max_chars and estimate_speech_seconds(piece) <= max_seconds


def _longest_fitting_prefix(rest: str, max_chars: int, max_seconds: float) -> int:
    """Length of the longest prefix of `rest` that fits; the fit is monotone in the prefix length."""
    if _fits(rest[:max_chars], max_chars, max_seconds):
        return min(len(rest), max_chars)  # the usual case: the character limit is the binding one
    lo, hi = 0, min(len(rest), max_chars)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits(rest[:mid], max_chars, max_seconds):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _starts_a_chunk(ch: str) -> bool:
    """A chunk may begin here: not on the boundary space, not on an accent that belongs to the letter before."""
    return ch != " " and not unicodedata.combining(ch)


def _cut_position(rest: str, limit: int) -> int:
    """Where to end the next chunk of `rest`, given that its first `limit` characters fit."""
    window = rest[:limit]
    for pattern in (_SENTENCE_END, _CLAUSE_END, _SPACE):
        cuts = [m.end() for m in pattern.finditer(window) if _starts_a_chunk(rest[m.end()])]
        if cuts:
            return cuts[-1]
    return next((cut for cut in range(limit, 0, -1) if _starts_a_chunk(rest[cut])), limit)


def chunk_text(text: str, max_chars: int, max_seconds: float) -> list[str]:
    """Cut normalized `text` into chunks (see the module docstring for the contract).

    Linear in the length of the text: each chunk is found in a window of at most `max_chars + 1`
    characters starting at the current position, and nothing after the window is copied or scanned."""
    if max_chars < 2:
        raise ValidationError(f"a TTS chunk limit of {max_chars} character(s) cannot hold a word and its space")
    normalized = normalize_text(text)
    if not normalized:
        raise ValidationError("the TTS text is empty")
    chunks: list[str] = []
    pos = 0
    while pos < len(normalized):
        window = normalized[pos : pos + max_chars + 1]  # one character more than a chunk may hold
        if len(window) <= max_chars and _fits(window, max_chars, max_seconds):
            chunks.append(window)
            break
        limit = _longest_fitting_prefix(window, max_chars, max_seconds)
        if limit == 0:
            raise ValidationError(
                f"TTS text cannot be cut to fit {max_seconds:g} s of speech per chunk: {window[:1]!r} alone is too long"
            )
        cut = _cut_position(window, limit)
        chunks.append(window[:cut])
        pos += cut
    return chunks


def chunk_cut_reason(chunks: list[str], index: int) -> str:
    """Why script chunk `index` ends where it does (one TTS job each, so the cut between jobs): the script's
    end, a sentence end, or a clause mark, a space or mid-word when a sentence is longer than one job takes."""
    chunk = chunks[index]
    where = f"script chunk {index + 1} of {len(chunks)}"
    if index == len(chunks) - 1:
        return f"{where}: the end of the script"
    marks = ((_SENTENCE_END, "a sentence end"), (_CLAUSE_END, "a clause mark"))
    what = next(
        (what for pattern, what in marks if any(m.end() == len(chunk) for m in pattern.finditer(chunk))),
        "a space" if chunk.endswith(" ") else "mid-word",
    )
    last_words = " ".join(spoken(chunk).split()[-3:])
    reason = f"{where} ends at {what} (after {last_words!r})"
    if what != "a sentence end":
        reason += ": its sentence is longer than one job takes"
    return reason


def sentence_end_times(text: str, total_seconds: float | None = None) -> tuple[float, ...]:
    """When each sentence of a script ends as spoken (for the cut plan), from the speech estimate, stretched
    to `total_seconds` (the measured length of the voice) when given. The script's own end is not one."""
    normalized = normalize_text(text)
    ends = [m.end() for m in _SENTENCE_END.finditer(normalized) if m.end() < len(normalized)]
    whole = estimate_speech_seconds(normalized)
    scale = total_seconds / whole if total_seconds and whole else 1.0
    return tuple(estimate_speech_seconds(normalized[:end]) * scale for end in ends)
