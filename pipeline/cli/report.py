"""`lipsync report RUN_DIR`: write RUN_DIR/report.html, one self-contained page per run."""

from __future__ import annotations

from pathlib import Path

import click

from . import handle_errors


@click.command()
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False, path_type=Path))
@handle_errors
def report(run_dir: Path) -> None:
    """Write RUN_DIR/report.html: players, plots, checks, costs and provider job ids of every job."""
    from ..report import write_report

    click.echo(write_report(run_dir))
