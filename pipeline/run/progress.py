"""Progress of a batch: one line per job (stage, provider state, elapsed, transcode %).

The runner reports through `Progress.update`; what the user sees depends on where stderr goes:
a rich live table on a terminal, plain log lines otherwise. Nothing here writes to stdout, so
`lipsync run --json` keeps stdout for the summary alone.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, replace

from .ledger import Stage

log = logging.getLogger("lipsync.run")


@dataclass(frozen=True)
class JobLine:
    job_id: str
    provider: str
    stage: Stage = Stage.PENDING
    provider_state: str | None = None
    fraction: float | None = None     # of the current transcode, 0..1
    started: float | None = None      # time.monotonic() when work on the job began
    ended: float | None = None
    note: str | None = None

    def elapsed(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or now) - self.started

    def describe(self) -> str:
        parts = [self.stage.value]
        if self.provider_state:
            parts.append(f"[{self.provider_state}]")
        if self.fraction is not None and self.stage is Stage.PREPARE:
            parts.append(f"{self.fraction:.0%}")
        if self.note:
            parts.append(self.note)
        return " ".join(parts)


class Progress:
    """Keeps one JobLine per job; subclasses decide how a change is shown. Thread-safe."""

    def __init__(self) -> None:
        self._lines: dict[str, JobLine] = {}
        self._lock = threading.Lock()

    def start(self, jobs: list[tuple[str, str]]) -> None:
        with self._lock:
            self._lines = {job_id: JobLine(job_id, provider) for job_id, provider in jobs}

    def update(self, job_id: str, **changes) -> None:
        now = time.monotonic()
        with self._lock:
            old = self._lines[job_id]
            if "stage" in changes and changes["stage"] != old.stage:
                changes.setdefault("fraction", None)
                changes.setdefault("provider_state", None if changes["stage"] is not Stage.POLL else old.provider_state)
                if old.started is None and changes["stage"] is not Stage.PENDING:
                    changes["started"] = now
                if Stage(changes["stage"]).finished:
                    changes["ended"] = now
            new = replace(old, **changes)
            self._lines[job_id] = new
        self.changed(old, new)

    def lines(self) -> list[JobLine]:
        with self._lock:
            return list(self._lines.values())

    def changed(self, old: JobLine, new: JobLine) -> None:
        """Show a change. The base class shows nothing (library use, tests)."""

    def stop(self) -> None:
        """Called once when the run ends."""

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class LogProgress(Progress):
    """Plain log lines on stderr: one per change of stage or provider state (not per transcode percent)."""

    def changed(self, old: JobLine, new: JobLine) -> None:
        if (old.stage, old.provider_state, old.note) != (new.stage, new.provider_state, new.note):
            log.info("%s: %s (%s, %.1f s)", new.job_id, new.describe(), new.provider, new.elapsed(time.monotonic()))


class LiveProgress(Progress):
    """A rich live table on a terminal, redrawn a few times a second."""

    def __init__(self, console=None) -> None:
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self._live = Live(console=console or Console(file=sys.stderr), refresh_per_second=4, transient=False,
                          get_renderable=self.table)
        self._logger = logging.getLogger("lipsync")
        self._saved_handlers = self._logger.handlers[:]
        self._logger.handlers = [_AboveTheTable(self._live.console, self._saved_handlers)]
        self._live.start()

    def table(self):
        from rich.table import Table

        now = time.monotonic()
        table = Table(box=None, header_style="bold")
        for column in ("job", "provider", "stage", "provider state", "elapsed"):
            table.add_column(column)
        for line in self.lines():
            stage = line.stage.value
            if line.fraction is not None and line.stage is Stage.PREPARE:
                stage = f"{stage} {line.fraction:.0%}"
            style = {Stage.DONE: "green", Stage.FAILED: "red", Stage.UNCERTAIN: "yellow"}.get(line.stage, "")
            table.add_row(line.job_id, line.provider, f"[{style}]{stage}[/]" if style else stage,
                          line.provider_state or line.note or "", f"{line.elapsed(now):.0f} s")
        return table

    def stop(self) -> None:
        self._live.stop()
        self._logger.handlers = self._saved_handlers


class _AboveTheTable(logging.Handler):
    """While the table is live, warnings and errors print above it (info lines are what the table replaces)."""

    def __init__(self, console, replaced: list[logging.Handler]):
        super().__init__(logging.WARNING)
        self.console = console
        for handler in replaced:  # keep their redaction and format
            for f in handler.filters:
                self.addFilter(f)
            if handler.formatter is not None:
                self.setFormatter(handler.formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.format(record), markup=False, highlight=False)


def make_progress(*, live: bool | None = None) -> Progress:
    """A live table when stderr is a terminal (or `live` says so), log lines otherwise."""
    if live is None:
        live = sys.stderr.isatty()
    return LiveProgress() if live else LogProgress()
