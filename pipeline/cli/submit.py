"""`lipsync submit`: one job end to end on prepared media, paid for once (rerun the same command to resume).
The job id goes to stderr as soon as it exists."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import UncertainCreate, ValidationError
from ..limits import PROVIDERS
from . import emit_json, handle_errors, json_option

if TYPE_CHECKING:
    from ..providers import JobHandle, JobStatus
    from ..providers.flow import FlowHooks

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


_F = TypeVar("_F", bound=Callable[..., Any])


def flow_options(command: _F) -> _F:
    """The options of a command that pays for provider jobs through the flow (`submit`, `animate`)."""
    for option in reversed(
        [
            click.option(
                "--timeout",
                type=click.FloatRange(min=1),
                help="Give up waiting for the job after this many seconds (and bound the download by it too).",
            ),
            click.option("--poll-interval", type=click.FloatRange(min=0.01), help="First poll interval in seconds."),
            click.option(
                "--resubmit-uncertain",
                is_flag=True,
                help="Create again a job whose create answer was lost (it may be billed twice).",
            ),
            click.option("--retry-failed", is_flag=True, help="Create a new job if the provider failed the last one."),
        ]
    ):
        command = option(command)
    return command


def printing_hooks(provider: str) -> FlowHooks:
    """Job ids to stderr as soon as they exist, and each change of the provider's status once."""
    from ..providers.flow import FlowHooks
    from ..safetext import printable

    shown: list[str] = []  # raw statuses already printed, so each change is printed once

    def on_created(handle: JobHandle) -> None:
        click.echo(f"{provider} job {printable(handle.job_id)} created", err=True)

    def on_status(status: JobStatus) -> None:
        if not shown or shown[-1] != status.raw_status:
            shown.append(status.raw_status)
            click.echo(f"  {status.state.value} ({printable(status.raw_status)})", err=True)

    return FlowHooks(on_created=on_created, on_status=on_status)


@contextmanager
def reconcile_shown() -> Iterator[None]:
    """An uncertain create's reconcile record printed (redacted) for the person who must look it up."""
    from ..safetext import printable
    from ..secrets import redact

    try:
        yield
    except UncertainCreate as err:
        click.echo(f"reconcile: {printable(redact(json.dumps(err.reconcile, default=str)), 4000)}", err=True)
        raise


@click.command()
@click.option("--provider", required=True, type=click.Choice(PROVIDERS))
@click.option("--video", required=True, type=_FILE, help="Prepared video (mp4/mov, inside the provider's limits).")
@click.option("--audio", type=_FILE, help="Prepared voice track (wav/mp3).")
@click.option("--text", help="Script for the provider's TTS instead of --audio.")
@click.option("--speaker", help="TTS voice (Emily ... Ethan, Auto); with --text only.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Result .mp4 to write.")
@flow_options
@json_option
@handle_errors
def submit(
    provider: str,
    video: Path,
    audio: Path | None,
    text: str | None,
    speaker: str | None,
    out: Path,
    timeout: float | None,
    poll_interval: float | None,
    resubmit_uncertain: bool,
    retry_failed: bool,
    as_json: bool,
) -> None:
    """Send VIDEO with AUDIO (or TEXT) to PROVIDER, wait for the result and download it to OUT.

    What was paid for is recorded in OUT.ledger.sqlite: the same command run again resumes that job."""
    from ..api import lip_sync
    from ..safetext import printable

    if (audio is None) == (text is None):
        raise ValidationError("give exactly one of --audio or --text")
    if speaker and text is None:
        raise ValidationError("--speaker goes with --text (the provider's TTS)")
    with reconcile_shown():
        result = lip_sync(
            provider=provider,
            video=video,
            audio=audio,
            text=text,
            speaker=speaker,
            out=out,
            timeout=timeout,
            poll_interval=poll_interval,
            resubmit_uncertain=resubmit_uncertain,
            retry_failed=retry_failed,
            hooks=printing_hooks(provider),
        )
    if result.started_with != "create":
        click.echo(
            f"{provider} job {printable(result.job_id)}: resumed from {result.ledger} ({result.started_with})", err=True
        )
    if as_json:
        emit_json({"ok": True, **result.to_dict()})
    else:
        click.echo(f"{result.output} ({result.size} bytes, sha256 {result.sha256})")
