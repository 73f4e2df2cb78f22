"""Text from a provider or a config, made safe for a terminal or a log line.

A request id, a status word or an error message comes from a server we do not control. Printed raw, an
ESC sequence retitles the terminal or rewrites the screen, a newline forges a whole log line, a bidi
override reverses what is read, and a 10 MB status word fills the disk one poll at a time. `printable`
shows every such character as an escape (`\\n`, `\\x1b`, `\\u202e`) and cuts a long value with a note of
its real length. It is applied where a value leaves us (log lines, the status table, the live display),
so the stored data stays as the provider sent it.
"""

from __future__ import annotations

import re

MAX_SHOWN = 200
# C0 controls, DEL and C1 controls; the Arabic letter mark, zero-width and direction marks, line and
# paragraph separators, bidi embeddings/overrides/isolates, invisible operators, BOM; lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: object, max_len: int = MAX_SHOWN) -> str:
    """`value` as one line of inert text, at most about `max_len` characters plus a length note."""
    text = value if isinstance(value, str) else str(value)
    shown = _UNSAFE.sub(_escape, text[:max_len])
    if len(text) <= max_len and len(shown) <= max_len:
        return shown
    return f"{shown[:max_len]}… [{len(text)} characters]"
