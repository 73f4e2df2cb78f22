"""Atomic file writes and hashing. Nothing is ever half-written under its final name."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
_TEMP_MIDDLE = "[a-z0-9_]{8}"  # between prefix and suffix: 8 hex digits (older versions: mkstemp's 8 characters)


def temp_prefix_suffix(final: Path) -> tuple[str, str]:
    """The prefix and suffix of `atomic_output`'s temp file beside `final`."""
    return f".{final.stem}.", f".part{final.suffix}"


def is_temp_of(name: str, final_name: str) -> bool:
    """Is `name` a temp file `atomic_output` makes for `final_name` (so, left by an interrupted write of
    ours)? A user's own `notes.part.txt` is not: only the exact shape of our temp names matches."""
    prefix, suffix = temp_prefix_suffix(Path(final_name))
    return re.fullmatch(re.escape(prefix) + _TEMP_MIDDLE + re.escape(suffix), name) is not None


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `final` (same suffix, so tools guess the format); rename into place on success.

    On any exception the temp file is removed and `final` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = temp_prefix_suffix(final)
    # the name is chosen before the file exists, so a Ctrl-C at any instant after its creation (even inside
    # the call that creates it) finds the name to remove: with mkstemp, the name came back only afterwards
    # absolute, as mkstemp's were: a relative "scene:2.mp4" reads as a protocol to ffmpeg
    tmp_path = Path(os.path.abspath(final.parent)) / f"{prefix}{secrets.token_hex(4)}{suffix}"
    try:
        os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # made 0600; a delivered file gets the usual mode
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    """The process umask. Reading it means setting it, so this runs once, at import, before any worker
    thread exists: changing it while other threads create files would give them the wrong mode."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_text_atomic(final: str | os.PathLike[str], text: str) -> None:
    with atomic_output(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], busy: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the duration; LipsyncError(`busy`) if
    another process holds it. The kernel drops the lock when the process dies, however it dies."""
    from .errors import LipsyncError

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LipsyncError(busy) from None
        yield


def read_regular_file(path: str | os.PathLike[str], cap: int, what: str, error: type[Exception] = ValueError) -> bytes:
    """The bytes of `path` if it is a regular file of at most `cap` bytes; else a one-line `error(message)`.
    Opened without blocking and checked on the open file: a FIFO would wait for a writer for ever,
    /dev/zero never ends. FileNotFoundError is left to the caller (it knows the better advice)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: the {what} is not a regular file (a pipe, a device or a folder)")
        if info.st_size > cap:
            raise error(f"{path}: the {what} is {info.st_size} bytes, over the {cap}-byte limit")
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise error(f"{path}: the {what} grew over the {cap}-byte limit while being read")
    return data


def sha256_json(data: Any) -> str:
    """A stable hash of JSON-able data (keys sorted): idempotency keys, request fingerprints."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
