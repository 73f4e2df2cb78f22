"""`lipsync plan CONFIG`: per job, the segments, their ranges and cut reasons, the provider calls and the
estimated cost. No network, no credits, no media written."""

from __future__ import annotations

from pathlib import Path

import click

from . import emit_json, handle_errors, json_option


@click.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--only", multiple=True, metavar="ID[,ID...]", help="Plan only these jobs (repeatable, or comma-separated)."
)
@json_option
@handle_errors
def plan(config_path: Path, only: tuple[str, ...], as_json: bool) -> None:
    """What `lipsync run CONFIG` would create and what it would cost, without creating anything."""
    from ..run.config import load_config
    from ..run.plan import plan_run

    config = load_config(config_path)
    only = tuple(job_id.strip() for group in only for job_id in group.split(",") if job_id.strip())
    planned = plan_run(config, only)
    if as_json:
        emit_json({"ok": True, **planned.to_dict()})
        return
    for job in planned.jobs:
        click.echo(
            f"{job.job_id}: {job.creates} provider call(s) at {job.provider} ({job.voice}), "
            f"estimated {job.estimate.text()}"
        )
        for part in job.parts:
            click.echo(
                f"  seg{part.index:03d}  {part.start:9.3f}-{part.end:9.3f} s  {part.seconds:7.3f} s  {part.cut_reason}"
            )
        for reason in job.reasons:  # the length policy and the segment count: why this many calls
            click.echo(f"  why: {reason}")
        for reason in job.estimate.reasons:
            click.echo(f"  cost: {reason}")
        if job.refusal:
            click.echo(f"  refused by the run: {job.refusal}")
    click.echo(f"total: {planned.creates} provider call(s), estimated {planned.total().text()}")
