"""Locating and running ffmpeg. Commands are argv lists (built with ffmpeg-python), never shell strings.

Every run returns an `FfmpegRun` so the stage can put the exact argv into the manifest.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeAlias

from .errors import ToolError

Stream: TypeAlias = Any
"""An ffmpeg-python stream/node graph: the library is untyped."""

ProgressFn = Callable[[float], None]
"""Called with the fraction done (0..1) while ffmpeg runs."""

X264_THREADS = 8
"""Every x264 encode uses this many threads. x264's output depends on its thread count, which ffmpeg
otherwise takes from the CPUs this process may use (affinity, a container's CPU set): the same clip came out
different bytes under `taskset -c 0`. Fixed, the same inputs give the same bytes on any load and any
concurrency; 8 costs ~3 % on 2 cores against ffmpeg's own choice (measured on a 720p encode)."""


@cache
def ffmpeg_exe() -> str:
    """`LIPSYNC_FFMPEG` if set, else the binary shipped in the imageio-ffmpeg wheel."""
    override = os.environ.get("LIPSYNC_FFMPEG")
    if override:
        return override
    import imageio_ffmpeg

    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


@cache
def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True)
    first = out.stdout.splitlines()[0] if out.stdout else "unknown"
    return first.removeprefix("ffmpeg version ").split(" Copyright")[0]


@dataclass(frozen=True)
class FfmpegRun:
    argv: list[str]
    seconds: float
    stderr_tail: str


_TIME_RE = re.compile(r"out_time_us=(\d+)")


def media_path(path: str | os.PathLike[str]) -> str:
    """A file name ffmpeg reads as a local file: absolute, so "take:2.mp4" is not a protocol, "-x.mp4" not an option."""
    return os.path.abspath(os.fspath(path))


def compile_stream(stream: Stream, *, overwrite: bool = True) -> list[str]:
    """argv for an ffmpeg-python stream graph, using our ffmpeg binary."""
    argv: list[str] = stream.compile(cmd=ffmpeg_exe(), overwrite_output=overwrite)
    return argv


def run_ffmpeg(
    argv: Sequence[str],
    *,
    what: str,
    duration: float | None = None,
    progress: ProgressFn | None = None,
) -> FfmpegRun:
    """Run one ffmpeg command. `what` names the file/operation for error messages.

    With `duration` and `progress`, parses `-progress pipe:1` output to report the fraction done.
    Raises ToolError with the tail of ffmpeg's stderr on a non-zero exit.
    """
    argv = list(argv)
    if argv and not os.path.isabs(argv[0]) and argv[0] == "ffmpeg":
        argv[0] = ffmpeg_exe()
    want_progress = progress is not None and duration
    if want_progress:
        argv = [argv[0], "-progress", "pipe:1", "-nostats", *argv[1:]]
    start = time.monotonic()
    tail: deque[str] = deque(maxlen=25)
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if want_progress else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    ) as proc:  # closes the pipes
        assert proc.stderr is not None  # stderr=PIPE
        try:
            if want_progress:
                assert proc.stdout is not None and progress is not None and duration  # stdout=PIPE, want_progress
                stderr = proc.stderr

                err_reader = threading.Thread(target=lambda: tail.extend(stderr), daemon=True)
                err_reader.start()
                for line in proc.stdout:
                    m = _TIME_RE.match(line)
                    if m:
                        progress(min(1.0, int(m.group(1)) / 1e6 / duration))
                proc.wait()
                err_reader.join()
            else:
                for line in proc.stderr:
                    tail.append(line)
                proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    stderr_tail = "".join(tail)
    if proc.returncode != 0:
        last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else f"exit {proc.returncode}"
        raise ToolError(f"ffmpeg failed while {what}: {last}")
    if progress:
        progress(1.0)
    return FfmpegRun(argv=argv, seconds=time.monotonic() - start, stderr_tail=stderr_tail)
