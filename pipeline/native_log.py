"""Native libraries' chatter kept off our stderr.

mediapipe's C++ core (absl logging, TensorFlow Lite) writes start-up notes straight to file descriptor 2
("INFO: Created TensorFlow Lite XNNPACK delegate", "W0000 … inference_feedback_manager.cc:114] …"), with no
switch to turn them off from Python. The CLI promises that stderr carries our progress and warnings, so
once a native library is about to load, fd 2 is routed through a pipe whose reader passes every line on
except those notes. Our own lines keep their order; the filter is undone at exit after draining the pipe.
"""

from __future__ import annotations

import atexit
import os
import re
import threading

_NATIVE_NOTE = re.compile(
    rb"^(INFO: Created TensorFlow Lite"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] )"
)
_lock = threading.Lock()
_installed = False


def is_native_note(line: bytes) -> bool:
    return bool(_NATIVE_NOTE.match(line))


def filter_native_stderr() -> None:
    """Route fd 2 through the note filter (once per process; later calls do nothing)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        reader = threading.Thread(target=_pass_on, args=(read_end, real), name="native-stderr", daemon=True)
        reader.start()
        atexit.register(_restore, real, reader)


def _pass_on(read_end: int, real: int) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            _write(real, b"".join(line + b"\n" for line in lines if not is_native_note(line)))
        if pending and not is_native_note(pending):
            _write(real, pending)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _restore(real: int, reader: threading.Thread) -> None:
    import sys

    sys.stderr.flush()
    os.dup2(real, 2)  # closes the pipe's last write end: the reader drains it and stops
    reader.join(timeout=5)
