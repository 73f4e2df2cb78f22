"""`lipsync run CONFIG`: run (or resume) a batch. The summary is the only thing on stdout with --json."""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..run.runner import RunSummary

from ..errors import ValidationError
from . import emit_json, handle_errors, json_option


@click.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--rehearse", is_flag=True, help="Run against a local emulator of the providers: no credits used.")
@click.option("--jobs", "jobs", type=click.IntRange(1, 64), help="Provider jobs in flight (overrides max_jobs).")
@click.option(
    "--only", multiple=True, metavar="ID[,ID...]", help="Run only these jobs (repeatable, or comma-separated)."
)
@click.option(
    "--resubmit-uncertain",
    is_flag=True,
    help="Create again the jobs whose create answer was lost (they may exist and be billed).",
)
@click.option("--retry-failed", is_flag=True, help="Create again the jobs the provider failed.")
@click.option(
    "--only-rejected",
    is_flag=True,
    help="Run only the jobs rejected in `lipsync review`: each gets new provider jobs (billed again, once); "
    "the delivery it replaces is kept in the job folder as take-N/.",
)
@click.option(
    "--force", is_flag=True, help="Use an output folder that holds other files (they are never deleted or overwritten)."
)
@click.option(
    "--budget",
    metavar="AMOUNT",
    help="Refuse (exit 4) before any provider job is created when the estimate (`lipsync plan`) is over "
    "AMOUNT, or unknown.",
)
@click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Run the jobs as tasks on this Dask scheduler (tcp://host:8786; overrides [run] cluster). "
    "Needs a PostgreSQL ledger and the media on storage every worker sees.",
)
@json_option
@handle_errors
def run(
    config_path: Path,
    rehearse: bool,
    jobs: int | None,
    only: tuple[str, ...],
    resubmit_uncertain: bool,
    retry_failed: bool,
    only_rejected: bool,
    force: bool,
    budget: str | None,
    cluster: str | None,
    as_json: bool,
) -> None:
    """Prepare, lip-sync, verify and hand off every job in CONFIG. Rerunning resumes where it stopped."""
    from ..api import run_config
    from ..run.progress import Progress, make_progress

    shown: list[Progress] = []  # the display, made once the config is loaded and within budget

    def progress() -> Progress:
        shown.append(make_progress())
        return shown[-1]

    try:
        summary = run_config(
            config_path,
            rehearse=rehearse,
            only=(job_id.strip() for group in only for job_id in group.split(",") if job_id.strip()),
            jobs=jobs,
            resubmit_uncertain=resubmit_uncertain,
            retry_failed=retry_failed,
            force=force,
            only_rejected=only_rejected,
            budget=None if budget is None else _amount(budget),
            progress=progress,
            cluster=cluster,
        )
    except KeyboardInterrupt:
        click.echo(f"interrupted: run `lipsync run {config_path}` again to resume; nothing is paid twice", err=True)
        sys.exit(130)
    _write_report(summary.run_dir)
    if only_rejected and not summary.outcomes:
        click.echo("no job is rejected in review: nothing to run", err=True)
    if as_json:
        emit_json(summary.to_dict())
    else:
        _print_summary(summary, per_job=not shown[-1].lists_jobs_above_stdout(), config=str(config_path))
    sys.exit(summary.exit_code)


def _write_report(run_dir: Path) -> None:
    """report.html at the end of every run; a report that cannot be written costs only the report."""
    from ..report import write_report

    try:
        click.echo(f"report: {write_report(run_dir)}", err=True)
    except Exception as err:
        click.echo(f"warning: report.html not written: {type(err).__name__}: {err}", err=True)


def _print_summary(summary: RunSummary, *, per_job: bool, config: str) -> None:
    from ..run.progress import summary_lines, uncertain_line

    for o in summary.outcomes:
        for u in o.uncertain:
            click.echo(uncertain_line(o.job_id, o.provider, u["segment"], u["reconcile"]), err=True)
    click.echo("\n".join(summary_lines(summary, per_job=per_job, config=config)))


def _amount(text: str) -> Decimal:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValidationError(f"--budget must be an amount such as 2.50 (got {text!r})") from None
    if not amount.is_finite() or amount < 0:
        raise ValidationError(f"--budget must be a positive amount (got {text!r})")
    return amount
