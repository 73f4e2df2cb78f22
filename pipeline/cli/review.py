"""`lipsync review RUN_DIR`: serve the run's report on loopback with approve / reject per job."""

from __future__ import annotations

from pathlib import Path

import click

from . import handle_errors


@click.command()
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port to listen on.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; the default keeps the review on this machine.",
)
@handle_errors
def review(run_dir: Path, port: int, host: str) -> None:
    """Open the printed address in a browser; decisions go into the run's ledger and each job's manifest.json.
    Rerun the rejected jobs with `lipsync run CONFIG --only-rejected`. Ctrl-C stops the server."""
    from ..report.server import ReviewServer

    with ReviewServer(run_dir, host=host, port=port) as server:
        click.echo(f"reviewing {run_dir} at {server.url} (Ctrl-C to stop)", err=True)
        try:
            server.wait()
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
