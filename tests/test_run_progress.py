"""Progress: one line per job; log lines only on real changes; the live table shows stage, detail and elapsed."""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

from rich.console import Console

from pipeline.providers.base import JobState, JobStatus
from pipeline.run.ledger import Stage
from pipeline.run.progress import LiveProgress, LogProgress, Progress, job_context, status_text, summary_lines
from pipeline.run.runner import JobOutcome, RunSummary


def line_of(progress: Progress, job_id: str):
    return {line.job_id: line for line in progress.lines()}[job_id]


def test_lines_track_stage_state_fraction_and_elapsed():
    progress = Progress()
    progress.start([("a", "fal"), ("b", "useapi")])
    progress.update("a", stage=Stage.PREPARE)
    progress.update("a", fraction=0.5)
    a = line_of(progress, "a")
    assert a.started is not None and a.fraction == 0.5 and "50%" in a.detail()
    assert a.describe() == "prepare: conforming"  # log lines carry no bar
    progress.update("a", stage=Stage.POLL, note="job-1")
    progress.update("a", provider_state="running (IN_PROGRESS)")
    a = line_of(progress, "a")
    assert a.fraction is None and a.describe() == "poll: running (IN_PROGRESS) · job job-1"
    progress.update("a", stage=Stage.DONE)
    a, b = progress.lines()
    assert a.ended is not None and a.elapsed(a.ended + 100) == a.ended - a.started
    assert b.stage is Stage.PENDING and b.elapsed(1e12) == 0.0


def test_a_job_of_several_segments_counts_the_results_back():
    progress = Progress()
    progress.start([("long", "fal")])
    progress.update("long", stage=Stage.POLL, note="req-2", segments=3, segments_done=0)
    for _ in range(2):
        progress.segment_done("long")
    assert line_of(progress, "long").detail().startswith("2/3 segments back")


def test_status_text_says_our_state_and_the_providers_word_when_it_differs():
    def status(state: JobState, raw: str) -> JobStatus:
        return JobStatus(state, raw, None, None, None, None, None, None)

    assert status_text(status(JobState.RUNNING, "5")) == "running (5)"
    assert status_text(status(JobState.QUEUED, "queued")) == "queued"


def test_log_progress_logs_changes_not_percentages(caplog):
    progress = LogProgress()
    progress.start([("a", "pixverse")])
    with caplog.at_level(logging.INFO, logger="lipsync.run"):
        progress.update("a", stage=Stage.PREPARE)
        for f in (0.1, 0.2, 0.3):
            progress.update("a", fraction=f)
        progress.update("a", stage=Stage.POLL)
        progress.update("a", provider_state="running (5)")
        progress.update("a", provider_state="running (5)")
    progress.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert messages[0].startswith("a: prepare") and "running (5)" in messages[2] and "pixverse" in messages[2]


def test_log_lines_written_for_a_job_name_it_once_even_from_other_threads():
    from pipeline.cli import setup_logging

    setup_logging()
    stream = io.StringIO()
    handler = logging.getLogger("lipsync").handlers[0]
    handler.setStream(stream)
    progress = LogProgress()
    other = logging.getLogger("lipsync.prepare")

    def work() -> None:
        with job_context("intro"):
            other.warning("voice.wav: the voice starts after 2.0 s of silence")
            other.warning("%s segment 0: created", "intro")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    other.warning("not about a job")
    progress.stop()
    assert stream.getvalue().splitlines() == [
        "intro: voice.wav: the voice starts after 2.0 s of silence",
        "intro segment 0: created",
        "not about a job",
    ]
    assert not handler.filters or all(type(f).__name__ != "JobTagFilter" for f in handler.filters)


def render(progress: LiveProgress, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width).print(progress.table())
    return out.getvalue()


def test_live_table_has_one_line_per_job_and_never_drops_a_column():
    progress = LiveProgress(console=Console(file=io.StringIO(), width=72, force_terminal=False))
    progress.start([("intro", "fal"), ("outro", "aimlapi"), ("credits", "pixverse")])
    progress.update("intro", stage=Stage.PREPARE, fraction=0.42)
    progress.update(
        "outro", stage=Stage.POLL, note="7f3e1c2a-0000-4b1e-9d7a-123456789abc", provider_state="running (generating)"
    )
    progress.update("credits", stage=Stage.FAILED, note="pixverse [500054]: moderated: " + "very long reason " * 8)
    progress.stop()
    text = render(progress, 72)
    rows = text.splitlines()
    assert rows[0].split() == ["job", "provider", "stage", "elapsed", "detail"]
    assert "42%" in text and "running (generating)" in text
    for job in ("intro", "outro", "credits"):
        (row,) = [r for r in rows if r.startswith(job)]
        assert len(row.rstrip()) <= 72 and " s " in row  # the elapsed column is there
    assert "…" in text and "1 failed, 2 in progress" in text


def test_live_display_prints_warnings_above_the_table_and_restores_logging():
    from pipeline.cli import setup_logging

    setup_logging()
    logger = logging.getLogger("lipsync")
    before = logger.handlers[:]
    buffer = io.StringIO()
    progress = LiveProgress(console=Console(file=buffer, width=100, force_terminal=False))
    logging.getLogger("lipsync.run").info("routine detail")
    with job_context("intro"):
        logging.getLogger("lipsync.run").warning("something to see")
    progress.stop()
    assert "intro: something to see" in buffer.getvalue() and "routine detail" not in buffer.getvalue()
    assert logger.handlers == before


def outcome(job_id: str, stage: Stage, final: str | None = None, error: str | None = None) -> JobOutcome:
    return JobOutcome(
        job_id, "fal", stage, 0 if stage is Stage.DONE else 5, error, Path(final) if final else None, (), 1.0, False
    )


def test_the_summary_says_where_the_deliverables_are_and_how_to_go_on():
    summary = RunSummary(
        "demo",
        Path("/runs/demo"),
        (
            outcome("intro", Stage.DONE, final="/runs/demo/intro/final.mp4"),
            outcome("outro", Stage.FAILED, error="fal: generation failed"),
        ),
        12.0,
        Path("/runs/demo/checksums.sha256"),
        rehearsal=True,
    )
    plain = summary_lines(summary, per_job=True, config="batch.toml")
    assert plain[0].split()[:3] == ["intro", "done", "/runs/demo/intro/final.mp4"]
    assert "fal: generation failed" in plain[1]
    assert "1/2 jobs delivered in /runs/demo (12.0 s, rehearsal: nothing billed)" in plain
    assert any("failed jobs" in line and "batch.toml" in line for line in plain)
    assert any("--retry-failed" in line for line in plain)  # outro's generation failed (exit 5)
    assert plain[-1] == "  details: lipsync status /runs/demo"
    assert summary_lines(summary, per_job=False, config="batch.toml") == plain[2:]


def test_what_a_job_waits_for_shows_until_its_next_stage():
    progress = Progress()
    progress.start([("a", "fal")])
    progress.update("a", stage=Stage.DOWNLOAD, note="req-1")
    progress.update("a", waiting="every result is in; waiting for a free CPU slot to mux")
    assert line_of(progress, "a").detail().startswith("every result is in")
    progress.update("a", stage=Stage.MUX)
    assert line_of(progress, "a").detail() == "putting the master audio on the result"
