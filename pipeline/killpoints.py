"""Test-only: SIGKILL this process at a named step, so crash tests can stop a run or a submit exactly there.

`LIPSYNC_TEST_KILL_AT=<point>` kills at the first time the point is reached; `<point>#<n>` at the n-th.
`LIPSYNC_TEST_KILL_ONCE=<file>`: each point kills only the first process to create `<file>.<point>`, so a
cluster's worker restarted with the same environment (or another worker) goes on; with it, the variable
may list several points (`prepare,poll,download`), each killing once.
Never set it outside tests and `make chaos`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import Counter

log = logging.getLogger("lipsync.killpoints")

KILL_POINTS = (
    "prepare",  # a job's media conformed, its cache record not yet written
    "upload",  # media uploaded for a create, the intent not yet recorded
    "after_intent",  # the intent recorded, the create not yet sent
    "after_send",  # the create's body sent to the last byte, its answer not yet read
    "backoff",  # a refused create recorded, waiting before the next attempt
    "after_create",  # the provider's job id recorded
    "poll",  # a status reply recorded
    "download",  # the result on disk, not yet recorded
    "mux",  # every result in, the final not yet built
    "handoff",  # the final verified, the handoff folder not yet written
)
_hits: Counter[str] = Counter()
_lock = threading.Lock()


def kill_point(name: str) -> None:
    """SIGKILL ourselves at `name` when LIPSYNC_TEST_KILL_AT says so."""
    assert name in KILL_POINTS, name
    wanted = os.environ.get("LIPSYNC_TEST_KILL_AT")
    if not wanted:
        return
    once = os.environ.get("LIPSYNC_TEST_KILL_ONCE")
    points = dict(entry.partition("#")[::2] for entry in (wanted.split(",") if once else [wanted]))
    if name not in points:
        return
    with _lock:
        _hits[name] += 1
        hit = _hits[name]
    if hit == int(points[name] or 1) and (not once or _first_to_die(f"{once}.{name}")):
        log.warning("LIPSYNC_TEST_KILL_AT=%s: killing this process at %s", wanted, name)
        os.kill(os.getpid(), signal.SIGKILL)


def _first_to_die(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
