"""`lipsync cluster up`: a local Dask cluster (a scheduler and N worker processes) for `lipsync run --cluster`."""

from __future__ import annotations

import threading

import click

from . import emit_json, handle_errors, json_option


@click.group()
def cluster() -> None:
    """A Dask cluster to run batches on (a real one is started with Dask's own commands: see the README)."""


@cluster.command()
@click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True, help="Worker processes.")
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=32,
    show_default=True,
    help="Jobs a worker runs at once (most of a job is waiting on a provider).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the scheduler listens on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8786, show_default=True, help="0: any free port.")
@json_option
@handle_errors
def up(workers: int, threads: int, host: str, port: int, as_json: bool) -> None:
    """Start a scheduler and worker processes here; print the address; run until Ctrl-C (or SIGTERM)."""
    from ..run.cluster import local_cluster

    with local_cluster(workers, threads, host, port) as info:
        if as_json:
            emit_json({"address": info.address, "workers": info.workers, "threads_per_worker": info.threads_per_worker})
        else:
            click.echo(info.address)
        click.echo(
            f"cluster up: {info.workers} workers x {info.threads_per_worker} threads; "
            f"`lipsync run CONFIG --cluster {info.address}`; Ctrl-C stops it",
            err=True,
        )
        threading.Event().wait()
