"""Progress: one line per job; log lines only on real changes; the live table shows stage, state and %."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from pipeline.run.ledger import Stage
from pipeline.run.progress import LiveProgress, LogProgress, Progress


def test_lines_track_stage_state_fraction_and_elapsed():
    progress = Progress()
    progress.start([("a", "fal"), ("b", "useapi")])
    progress.update("a", stage=Stage.PREPARE)
    progress.update("a", fraction=0.5)
    a = {line.job_id: line for line in progress.lines()}["a"]
    assert a.started is not None and a.fraction == 0.5 and a.describe() == "prepare 50%"
    progress.update("a", stage=Stage.POLL, note="job-1")
    progress.update("a", provider_state="IN_PROGRESS")
    a = {line.job_id: line for line in progress.lines()}["a"]
    assert a.fraction is None and a.describe() == "poll [IN_PROGRESS] job-1"
    progress.update("a", stage=Stage.DONE)
    a, b = progress.lines()
    assert a.ended is not None and a.elapsed(a.ended + 100) == a.ended - a.started
    assert b.stage is Stage.PENDING and b.elapsed(1e12) == 0.0


def test_log_progress_logs_changes_not_percentages(caplog):
    progress = LogProgress()
    progress.start([("a", "pixverse")])
    with caplog.at_level(logging.INFO, logger="lipsync.run"):
        progress.update("a", stage=Stage.PREPARE)
        for f in (0.1, 0.2, 0.3):
            progress.update("a", fraction=f)
        progress.update("a", stage=Stage.POLL)
        progress.update("a", provider_state="5")
        progress.update("a", provider_state="5")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert messages[0].startswith("a: prepare") and "[5]" in messages[2] and "pixverse" in messages[2]


def test_live_table_has_one_row_per_job():
    buffer = io.StringIO()
    progress = LiveProgress(console=Console(file=buffer, width=100, force_terminal=False))
    progress.start([("intro", "fal"), ("outro", "aimlapi")])
    progress.update("intro", stage=Stage.PREPARE, fraction=0.42)
    progress.update("outro", stage=Stage.POLL, provider_state="generating")
    progress.stop()
    render = io.StringIO()
    Console(file=render, width=100).print(progress.table())
    text = render.getvalue()
    assert "prepare 42%" in text and "generating" in text
    assert text.count("intro") == 1 and text.count("outro") == 1


def test_live_display_prints_warnings_above_the_table_and_restores_logging():
    from pipeline.cli import setup_logging

    setup_logging()
    logger = logging.getLogger("lipsync")
    before = logger.handlers[:]
    buffer = io.StringIO()
    progress = LiveProgress(console=Console(file=buffer, width=100, force_terminal=False))
    logging.getLogger("lipsync.run").info("routine detail")
    logging.getLogger("lipsync.run").warning("something to see")
    progress.stop()
    assert "something to see" in buffer.getvalue() and "routine detail" not in buffer.getvalue()
    assert logger.handlers == before
