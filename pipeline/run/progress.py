"""Progress of a batch: one line per job (stage, what it is doing or waiting for, elapsed, transcode %).

The runner reports through `Progress.update`; what the user sees depends on where stderr goes:
a rich live table on a terminal (its last frame stays as the table of outcomes), plain log lines
otherwise. Nothing here writes to stdout, so `lipsync run --json` keeps stdout for the summary alone.
Log lines written while a job's code runs (`job_context`) are prefixed with the job id.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import GenerationFailed
from ..safetext import printable
from .ledger import Stage

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from ..providers.base import JobStatus
    from .runner import RunSummary

log = logging.getLogger("lipsync.run")

_BAR_WIDTH = 12
_STAGE_STYLES = {
    Stage.DONE: "green",
    Stage.FAILED: "red",
    Stage.UNCERTAIN: "yellow",
    Stage.INTERRUPTED: "yellow",
    Stage.PENDING: "dim",
    Stage.QUEUED: "dim",
}
_WORKING = {
    Stage.SUBMIT: "uploading and creating the provider job",
    Stage.MUX: "putting the master audio on the result",
    Stage.VERIFY: "checking the final file",
    Stage.HANDOFF: "writing the delivery folder",
    Stage.INTERRUPTED: "stopped: run again to resume",
}
DETAIL_SHOWN = 400  # characters of a job's detail shown (the table cuts it further to the screen)
WORD_SHOWN = 80  # characters of a provider's status word


def status_text(status: JobStatus) -> str:
    """A provider's JobStatus in words: our state, and the provider's own word for it when that differs."""
    state, raw = status.state.value, printable(status.raw_status, WORD_SHOWN)
    return state if raw.lower() == state else f"{state} ({raw})"


def short_path(path: str | Path) -> str:
    """`path` relative to the working directory when it is below it (what a user would type), else as is."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except (OSError, ValueError):
        return str(path)


def _bar(fraction: float) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * _BAR_WIDTH)
    return "█" * filled + "░" * (_BAR_WIDTH - filled) + f" {fraction:4.0%}"


@dataclass(frozen=True)
class JobLine:
    job_id: str
    provider: str
    stage: Stage = Stage.PENDING
    provider_state: str | None = None  # the provider's last answer about the job (status_text)
    fraction: float | None = None  # of the current transcode, 0..1
    started: float | None = None  # time.monotonic() when work on the job began
    ended: float | None = None
    note: str | None = None  # the runner's detail: a provider job id, the final path, an error
    segments: int = 0  # provider jobs this job needs (known once prepared)
    segments_done: int = 0
    waiting: str | None = None  # what the job waits for before its next stage (cleared by the stage)

    def elapsed(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or now) - self.started

    def detail(self) -> str:
        """What the job is doing, waiting for, or ended with, in words: one line of printable text (a job id
        or an error message from a provider may hold escape sequences, newlines, megabytes)."""
        return printable(self._detail(), DETAIL_SHOWN)

    def _detail(self) -> str:
        stage = self.stage
        if self.waiting:
            return self.waiting
        if stage is Stage.PENDING:
            return "waiting for a free CPU slot" if self.note is None else self.note
        if stage is Stage.PREPARE:
            return "conforming" + ("" if self.fraction is None else f" {_bar(self.fraction)}")
        if stage is Stage.QUEUED:
            return f"prepared; waiting for a {self.provider} slot"
        if stage is Stage.POLL:
            return self._of_segments(
                f"{self.provider_state or 'submitted'}" + (f" · job {self.note}" if self.note else "")
            )
        if stage is Stage.DOWNLOAD:
            return self._of_segments(f"downloading the result · job {self.note}")
        if stage is Stage.DONE:
            return "delivered " + short_path(self.note) if self.note and os.sep in self.note else (self.note or "")
        if stage in (Stage.FAILED, Stage.UNCERTAIN):
            return self.note or ""
        return self._of_segments(_WORKING.get(stage, stage.value))

    def _of_segments(self, text: str) -> str:
        return f"{self.segments_done}/{self.segments} segments back · {text}" if self.segments > 1 else text

    def describe(self) -> str:
        """One log line's worth: the stage and its detail (no transcode bar)."""
        detail = replace(self, fraction=None).detail()
        return f"{self.stage.value}: {detail}" if detail else self.stage.value


class Progress:
    """Keeps one JobLine per job; subclasses decide how a change is shown. Thread-safe."""

    def lists_jobs_above_stdout(self) -> bool:
        """Does the last thing above what stdout prints list every job (so a summary need not repeat them)?"""
        return False

    def __init__(self) -> None:
        self._lines: dict[str, JobLine] = {}
        self._lock = threading.Lock()

    def start(self, jobs: list[tuple[str, str]]) -> None:
        with self._lock:
            self._lines = {job_id: JobLine(job_id, provider) for job_id, provider in jobs}

    def update(self, job_id: str, **changes: Any) -> None:
        now = time.monotonic()
        with self._lock:
            old = self._lines[job_id]
            if "stage" in changes and changes["stage"] != old.stage:
                changes.setdefault("fraction", None)
                changes.setdefault("waiting", None)
                changes.setdefault("provider_state", None if changes["stage"] is not Stage.POLL else old.provider_state)
                if old.started is None and changes["stage"] is not Stage.PENDING:
                    changes["started"] = now
                if Stage(changes["stage"]).finished:
                    changes["ended"] = now
            new = replace(old, **changes)
            self._lines[job_id] = new
        self.changed(old, new)

    def segment_done(self, job_id: str) -> None:
        with self._lock:
            done = self._lines[job_id].segments_done + 1
        self.update(job_id, segments_done=done)

    def lines(self) -> list[JobLine]:
        with self._lock:
            return list(self._lines.values())

    def changed(self, old: JobLine, new: JobLine) -> None:
        """Show a change. The base class shows nothing (library use, tests)."""

    def stop(self) -> None:
        """Called once when the run ends."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- which job a log line is about ----------------------------------------------------------------

_current_job: ContextVar[str | None] = ContextVar("lipsync_job", default=None)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Log lines written inside (in this thread) are about `job_id`."""
    token = _current_job.set(job_id)
    try:
        yield
    finally:
        _current_job.reset(token)


class JobTagFilter(logging.Filter):
    """Prefixes a record with the job it is about, unless its message already starts with the job id."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = _current_job.get()
        if job and not getattr(record, "lipsync_job", None) and not record.getMessage().startswith(job):
            record.msg = f"{job}: {record.msg}"
            record.lipsync_job = job
        return True


# ---- the two displays -----------------------------------------------------------------------------


class LogProgress(Progress):
    """Plain log lines on stderr: one per change of stage, provider state or detail (not per transcode %)."""

    def __init__(self) -> None:
        super().__init__()
        self._tag = JobTagFilter()
        self._handlers = logging.getLogger("lipsync").handlers[:]
        for handler in self._handlers:
            handler.addFilter(self._tag)

    def changed(self, old: JobLine, new: JobLine) -> None:
        if (old.stage, old.provider_state, old.note) != (new.stage, new.provider_state, new.note):
            log.info("%s: %s (%s, %.1f s)", new.job_id, new.describe(), new.provider, new.elapsed(time.monotonic()))

    def stop(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self._tag)


class LiveProgress(Progress):
    """A rich live table on a terminal, redrawn a few times a second; its last frame is the table of outcomes."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self._console = console or Console(file=sys.stderr)
        self._live = Live(console=self._console, refresh_per_second=4, transient=False, get_renderable=self.table)
        self._logger = logging.getLogger("lipsync")
        self._saved_handlers = self._logger.handlers[:]
        self._logger.handlers = [_AboveTheTable(self._live.console, self._saved_handlers)]
        self._live.start()

    def table(self) -> Table:
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        lines = self.lines()
        table = Table(box=None, header_style="bold", caption=_tally(lines), caption_justify="left", pad_edge=False)
        # every column but the detail keeps its width; a detail too long for the screen ends in "…"
        widths = [
            max([len("job"), *(len(line.job_id) for line in lines)]),
            max([len("provider"), *(len(line.provider) for line in lines)]),
            len("✓ download"),
            len("elapsed"),
        ]
        detail_width = max(10, self._console.width - sum(widths) - 2 * len(widths))
        for name, width in zip(("job", "provider", "stage", "elapsed"), widths, strict=True):
            table.add_column(name, no_wrap=True, min_width=width, justify="right" if name == "elapsed" else "left")
        table.add_column("detail", no_wrap=True)
        for line in lines:
            style = _STAGE_STYLES.get(line.stage, "bold")
            mark = {Stage.DONE: "✓ ", Stage.FAILED: "✗ ", Stage.UNCERTAIN: "? "}.get(line.stage, "")
            elapsed = f"{line.elapsed(now):.0f} s" if line.started is not None else "-"
            detail = Text(line.detail(), style="red" if line.stage is Stage.FAILED else "")
            detail.truncate(detail_width, overflow="ellipsis")
            table.add_row(line.job_id, line.provider, Text(mark + line.stage.value, style=style), elapsed, detail)
        return table

    def lists_jobs_above_stdout(self) -> bool:
        return sys.stdout.isatty()  # the table's last frame stays on the terminal stdout also writes to

    def stop(self) -> None:
        self._live.stop()
        self._logger.handlers = self._saved_handlers


def _tally(lines: list[JobLine]) -> str:
    """The jobs counted by outcome, e.g. "2 done, 1 failed, 3 in progress, 1 waiting"."""
    finished = {
        Stage.DONE: "done",
        Stage.FAILED: "failed",
        Stage.UNCERTAIN: "uncertain",
        Stage.INTERRUPTED: "interrupted",
    }
    counts: dict[str, int] = {}
    for line in lines:
        word = finished.get(line.stage, "waiting" if line.stage is Stage.PENDING else "in progress")
        counts[word] = counts.get(word, 0) + 1
    order = ("done", "failed", "uncertain", "interrupted", "in progress", "waiting")
    return ", ".join(f"{counts[w]} {w}" for w in order if w in counts)


class _AboveTheTable(logging.Handler):
    """While the table is live, warnings and errors print above it (info lines are what the table replaces)."""

    def __init__(self, console: Console, replaced: list[logging.Handler]) -> None:
        super().__init__(logging.WARNING)
        self.console = console
        for handler in replaced:  # keep their redaction and format
            for f in handler.filters:
                self.addFilter(f)
            if handler.formatter is not None:
                self.setFormatter(handler.formatter)
        self.addFilter(JobTagFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(
            self.format(record),
            markup=False,
            highlight=False,
            style="red" if record.levelno >= logging.ERROR else "yellow",
        )


def uncertain_line(job_id: str, provider: str, segment: int, reconcile: dict[str, Any] | None) -> str:
    """What a person needs about one create whose answer was lost: which segment, when it was sent, how to
    find it, and what --resubmit-uncertain would do."""
    info = reconcile or {}
    when = info.get("sent_at") or info.get("intent_at") or "an unrecorded time"
    ref = f"; it was sent with reference {printable(str(info['reply_ref']), 120)}" if info.get("reply_ref") else ""
    return (
        f"uncertain: {job_id} segment {segment}: a create sent to {provider} at {printable(str(when), 40)} got "
        f"no answer, so it may exist and be billed{ref}. Look for it in {provider}'s dashboard (hashes and "
        f"the request: `lipsync status --json`); --resubmit-uncertain sends it again, a second paid job "
        f"if the first one exists"
    )


def summary_lines(summary: RunSummary, *, per_job: bool, config: str = "CONFIG") -> list[str]:
    """The end of a run in words: one line per job (unless the live table already shows them), then where the
    deliverables are and what to do about jobs that did not finish. `summary` is a runner.RunSummary."""
    lines = []
    if per_job:
        width = max((len(o.job_id) for o in summary.outcomes), default=0)
        for o in summary.outcomes:
            where = short_path(o.final) if o.final else printable(o.error or "", DETAIL_SHOWN)
            lines.append(f"{o.job_id:<{width}}  {o.stage.value:<11} {where}")
    done = sum(1 for o in summary.outcomes if o.final is not None)
    how = ", rehearsal: nothing billed" if summary.rehearsal else ""
    lines.append(
        f"{done}/{len(summary.outcomes)} jobs delivered in {short_path(summary.run_dir)} ({summary.seconds:.1f} s{how})"
    )
    if done:
        lines.append("  each job's folder: final.mp4 and manifest.json (which lists every file delivered)")
    if summary.checksums:
        lines.append(f"  checksums: {short_path(summary.checksums)}")
    failed = [o for o in summary.outcomes if o.stage is Stage.FAILED]
    if failed:
        lines.append(f"  failed jobs: fix the cause their error names, then `lipsync run {config}` again")
    if any(o.exit_code == GenerationFailed.exit_code for o in failed):
        lines.append("  a generation the provider failed is only created again with --retry-failed")
    if any(not o.stage.finished for o in summary.outcomes):
        lines.append(f"  unfinished jobs resume with `lipsync run {config}`")
    lines.append(f"  details: lipsync status {short_path(summary.run_dir)}")
    return lines


def make_progress(*, live: bool | None = None) -> Progress:
    """A live table when stderr is a terminal (or `live` says so), log lines otherwise."""
    if live is None:
        live = sys.stderr.isatty()
    return LiveProgress() if live else LogProgress()
