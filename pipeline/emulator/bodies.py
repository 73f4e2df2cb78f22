"""Request bodies too big to hold: a JSON object whose string values may be 67 MB data URIs.

The body is streamed to disk, then read back by a small scanner of the top-level object that writes any
long string value to its own file (`LargeText`) instead of memory. Data URIs are decoded from that file
in chunks. Nothing holds more than a few MB at once, however big the request.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote_to_bytes

_READ = 1 << 20
_SPILL_AT = 64 * 1024  # longer string values go to a file
_SPECIAL = re.compile(r'["\\]')
_SCALAR_END = re.compile(r"[,}\]\s]")


def _hex(digits: str) -> int:
    try:
        return int(digits, 16)
    except ValueError:
        return -1


class BodyError(ValueError):
    """The body is not a JSON object (the message says where it went wrong)."""


@dataclass(frozen=True)
class LargeText:
    """A JSON string value kept in a file: `length` characters of UTF-8 text."""

    path: Path
    length: int

    def __len__(self) -> int:
        return self.length

    def startswith(self, prefix: str) -> bool:
        with open(self.path, encoding="utf-8", newline="") as f:
            return f.read(len(prefix)) == prefix


class _Scanner:
    def __init__(self, f: TextIO, spill_dir: Path, spill_at: int, read_size: int):
        self.f, self.spill_dir, self.spill_at, self.read_size = f, spill_dir, spill_at, read_size
        self.buf, self.pos, self.spilled = "", 0, 0

    def _more(self) -> bool:
        chunk = self.f.read(self.read_size)
        if not chunk:
            return False
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def _ensure(self, n: int) -> None:
        while len(self.buf) - self.pos < n:
            if not self._more():
                raise BodyError("body ends in the middle of a value")

    def peek(self) -> str:
        """The next non-space character, not consumed ("" at the end)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos : self.pos + 1]

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise BodyError(f"expected {ch!r}, found {self.peek()!r}")
        self.pos += 1

    def string(self, *, may_spill: bool = True) -> str | LargeText:
        self.expect('"')
        parts: list[str] = []
        size, out, closed = 0, None, False
        while not closed:
            m = _SPECIAL.search(self.buf, self.pos)
            if m is None:
                piece, self.pos = self.buf[self.pos :], len(self.buf)
                if not self._more():
                    raise BodyError("unterminated string")
            else:
                piece, self.pos = self.buf[self.pos : m.start()], m.start()
                closed = self.buf[self.pos] == '"'
                if closed:
                    self.pos += 1
                else:
                    piece += self._escape()
            parts.append(piece)
            size += len(piece)
            if may_spill and size > self.spill_at:
                out = out or self._spill_file()
                out.write("".join(parts))
                parts = []
        if out is None:
            return "".join(parts)
        out.close()
        return LargeText(Path(out.name), size)

    def _escape(self) -> str:
        self._ensure(2)
        width = 6 if self.buf[self.pos + 1] == "u" else 2
        self._ensure(width)
        if width == 6 and 0xD800 <= _hex(self.buf[self.pos + 2 : self.pos + 6]) < 0xDC00:
            width = self._surrogate_pair_width()
        seq = self.buf[self.pos : self.pos + width]
        self.pos += width
        try:
            text: str = json.loads(f'"{seq}"')
            return text
        except ValueError:
            raise BodyError(f"bad escape {seq!r}") from None

    def _surrogate_pair_width(self) -> int:
        """A high surrogate escape takes its low half with it (12 characters) when one follows."""
        while len(self.buf) - self.pos < 12 and self._more():
            pass
        return 12 if self.buf[self.pos + 6 : self.pos + 8] == "\\u" else 6

    def _spill_file(self) -> TextIO:
        self.spilled += 1
        return open(self.spill_dir / f"value-{self.spilled}.txt", "w", encoding="utf-8", newline="")

    def value(self) -> object:
        ch = self.peek()
        if ch == '"':
            return self.string()
        if ch in ("{", "["):
            return self._nested()
        while True:
            m = _SCALAR_END.search(self.buf, self.pos)
            if m is not None or not self._more():
                break
        end = m.start() if m is not None else len(self.buf)
        raw, self.pos = self.buf[self.pos : end], end
        try:
            return json.loads(raw)
        except ValueError:
            raise BodyError(f"bad value {raw[:40]!r}") from None

    def _nested(self) -> object:
        """A nested object or array (small, unknown fields): collected char by char, then parsed."""
        depth, in_string, escaped, chars = 0, False, False, []
        while True:
            if self.pos >= len(self.buf) and not self._more():
                raise BodyError("unterminated object or array")
            ch = self.buf[self.pos]
            self.pos += 1
            chars.append(ch)
            if escaped:
                escaped = False
            elif in_string:
                escaped, in_string = ch == "\\", ch != '"'
            elif ch == '"':
                in_string = True
            elif ch in "{[":
                depth += 1
            elif ch in "}]":
                depth -= 1
                if depth == 0:
                    return json.loads("".join(chars))


def parse_object(
    path: Path, spill_dir: Path, *, spill_at: int = _SPILL_AT, read_size: int = _READ
) -> dict[str, object]:
    """The top-level JSON object in `path`; string values longer than `spill_at` become `LargeText` files."""
    with open(path, encoding="utf-8", newline="") as f:
        scanner = _Scanner(f, spill_dir, spill_at, read_size)
        try:
            scanner.expect("{")
            doc: dict[str, object] = {}
            if scanner.peek() == "}":
                scanner.pos += 1
            else:
                while True:
                    key = scanner.string(may_spill=False)
                    assert isinstance(key, str)  # may_spill=False keeps every string in memory
                    scanner.expect(":")
                    doc[key] = scanner.value()
                    if scanner.peek() == "}":
                        scanner.pos += 1
                        break
                    scanner.expect(",")
            if scanner.peek() != "":
                raise BodyError("text after the JSON object")
        except UnicodeDecodeError:
            raise BodyError("body is not UTF-8") from None
    return doc


def decode_data_uri(source: str | LargeText, dest: Path) -> None:
    """Write the bytes of a `data:[type][;base64],...` URI to `dest`, reading a LargeText in chunks."""
    f: TextIO | _StringReader
    with (
        open(source.path, encoding="utf-8", newline="") if isinstance(source, LargeText) else _StringReader(source) as f
    ):
        head = f.read(1024)
        header, sep, rest = head.partition(",")
        if not sep:
            raise BodyError("malformed data URI")
        with open(dest, "wb") as out:
            if not header.endswith(";base64"):
                out.write(unquote_to_bytes(rest + f.read()))
                return
            carry = ""
            while True:
                text = carry + "".join(rest.split())
                cut = len(text) - len(text) % 4
                try:
                    out.write(base64.b64decode(text[:cut], validate=True))
                except binascii.Error:
                    raise BodyError("data URI is not valid base64") from None
                carry = text[cut:]
                rest = f.read(_READ)
                if not rest:
                    break
            if carry:
                raise BodyError("data URI base64 is truncated")


class _StringReader:
    """A str read in chunks like a file, so both kinds of data URI take one path."""

    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def read(self, n: int = -1) -> str:
        end = len(self.text) if n < 0 else self.pos + n
        piece, self.pos = self.text[self.pos : end], min(end, len(self.text))
        return piece

    def __enter__(self) -> _StringReader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
