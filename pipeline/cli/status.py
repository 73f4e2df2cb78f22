"""`lipsync status RUN_DIR`: every job's stage, provider job ids, timings and outcome, from the ledger."""

from __future__ import annotations

import time
from pathlib import Path

import click

from . import emit_json, handle_errors, json_option


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@json_option
@handle_errors
def status(run_dir: Path, as_json: bool) -> None:
    """Show where each job of a run stands (read-only; safe while the run is going)."""
    from ..run.ledger import read_status

    report = read_status(run_dir)
    if as_json:
        emit_json(report.to_dict())
        return
    now = time.time()
    if not report.running and any(not job.row.stage.finished for job in report.jobs):
        click.echo("no run is active here: unfinished jobs resume with `lipsync run CONFIG`", err=True)
    for job in report.jobs:
        ids = ", ".join(c.provider_job_id or f"uncertain#{c.attempt}" for c in job.creates) or "-"
        outcome = job.row.error or job.row.final_path or ""
        click.echo(f"{job.row.job_id:<20} {job.row.stage.value:<11} {job.row.provider:<9} "
                   f"{job.elapsed(now):7.1f} s  {ids}  {outcome}")
    if report.uncertain:
        click.echo(f"{len(report.uncertain)} uncertain create(s): may exist and be billed; "
                   "check the provider, then rerun with --resubmit-uncertain", err=True)
