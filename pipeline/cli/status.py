"""`lipsync status RUN_DIR`: every job's stage, time per phase, provider jobs and outcome, from the ledger."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..providers.store import CreateRecord
    from ..run.ledger import JobView, RunStatus

from ..safetext import printable
from ..secrets import redact
from . import emit_json, handle_errors, json_option

CELL_SHOWN = 200
HEADER = ("job", "provider", "stage", "elapsed", "prepare", "provider", "finish", "provider jobs", "outcome")
# which ledger stages count towards each phase column
PHASES = {"prepare": ("prepare",), "provider": ("submit", "poll", "download"), "finish": ("mux", "verify", "handoff")}
STAGE_COLOURS: dict[str | None, str] = {
    "done": "green",
    "failed": "red",
    "uncertain": "yellow",
    "interrupted": "yellow",
}


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@json_option
@handle_errors
def status(run_dir: Path, as_json: bool) -> None:
    """Show where each job of a run stands (read-only; safe while the run is going)."""
    from ..run.ledger import read_status
    from ..run.progress import uncertain_line
    from ..run.reviews import Reviews

    report = read_status(run_dir)
    reviews = Reviews(run_dir).all()
    if as_json:
        emit_json({**report.to_dict(), "reviews": {job: r.to_dict() for job, r in reviews.items()}})
        return
    now = time.time()
    rows = [job_row(job, now) for job in report.jobs]
    for i, line in enumerate(aligned([HEADER, *rows])):
        stage = rows[i - 1][2] if i else None
        click.echo(click.style(line, bold=True) if i == 0 else click.style(line, fg=STAGE_COLOURS.get(stage)))
    click.echo(footer(report))
    for job_id, r in reviews.items():
        click.echo(f"review: {job_id} {r.decision.value}" + (f": {r.note}" if r.note else ""))
    for create in report.uncertain:
        click.echo(uncertain_line(create.job_id, create.provider, create.segment, create.reconcile), err=True)


def job_row(job: JobView, now: float) -> tuple[str, ...]:
    from ..run.progress import short_path

    phases = {
        name: sum((s.finished_at or now) - s.started_at for s in job.stages if s.stage in stages)
        for name, stages in PHASES.items()
    }
    outcome = job.row.error or (short_path(job.row.final_path) if job.row.final_path else (job.row.detail or ""))
    # from the first stage, as the live table counts: the wait for a free CPU slot before it is not the job's
    started = min((s.started_at for s in job.stages), default=job.row.started_at)
    elapsed = (job.row.finished_at or now) - started
    row = (
        job.row.job_id,
        job.row.provider,
        job.row.stage.value,
        _seconds(elapsed),
        *(_seconds(phases[name]) if phases[name] else "-" for name in PHASES),
        provider_jobs(job.creates),
        outcome,
    )
    # ids, provider words and errors come from providers: one inert line each, secrets masked
    return tuple(printable(redact(cell), CELL_SHOWN) for cell in row)


def provider_jobs(creates: list[CreateRecord]) -> str:
    """One provider job: its id and state (and the provider's word while it runs); several: counted by state."""
    if not creates:
        return "-"
    if len(creates) == 1:
        c = creates[0]
        running = f", {c.provider_state}" if c.provider_state and c.state.value == "created" else ""
        return f"{c.provider_job_id or 'no id'} ({c.state.value}{running})"
    states = [c.state.value for c in creates]
    counts = {state: states.count(state) for state in dict.fromkeys(states)}
    if len(counts) == 1:
        return f"{len(creates)} jobs, all {states[0]}"
    return f"{len(creates)} jobs: " + ", ".join(f"{n} {state}" for state, n in counts.items())


def footer(report: RunStatus) -> str:
    from ..run.progress import short_path

    done = sum(1 for job in report.jobs if job.row.stage.value == "done")
    unfinished = [job.row.job_id for job in report.jobs if not job.row.stage.finished]
    text = f"{done}/{len(report.jobs)} jobs done in {short_path(report.run_dir)}"
    if report.running:
        return text + "; a `lipsync run` is working here now"
    if unfinished:
        return text + f"; no run is active: {', '.join(unfinished)} resume with `lipsync run CONFIG`"
    return text


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 600 else f"{s / 60:.0f} min"


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as left-aligned columns two spaces apart (the last column is not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows]
