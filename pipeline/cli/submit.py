"""`lipsync submit`: one job end to end on prepared media, paid for once (rerun the same command to resume).
The job id goes to stderr as soon as it exists."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from ..errors import UncertainCreate, ValidationError
from ..limits import PROVIDERS
from . import emit_json, handle_errors, json_option

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.option("--provider", required=True, type=click.Choice(PROVIDERS))
@click.option("--video", required=True, type=_FILE, help="Prepared video (mp4/mov, inside the provider's limits).")
@click.option("--audio", type=_FILE, help="Prepared voice track (wav/mp3).")
@click.option("--text", help="Script for the provider's TTS instead of --audio.")
@click.option("--speaker", help="TTS voice (Emily ... Ethan, Auto); with --text only.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Result .mp4 to write.")
@click.option("--timeout", type=click.FloatRange(min=1),
              help="Give up waiting for the job after this many seconds (and bound the download by it too).")
@click.option("--poll-interval", type=click.FloatRange(min=0.01), help="First poll interval in seconds.")
@click.option("--resubmit-uncertain", is_flag=True,
              help="Create again a job whose create answer was lost (it may be billed twice).")
@click.option("--retry-failed", is_flag=True, help="Create a new job if the provider failed the last one.")
@json_option
@handle_errors
def submit(provider: str, video: Path, audio: Path | None, text: str | None, speaker: str | None, out: Path,
           timeout: float | None, poll_interval: float | None, resubmit_uncertain: bool, retry_failed: bool,
           as_json: bool) -> None:
    """Send VIDEO with AUDIO (or TEXT) to PROVIDER, wait for the result and download it to OUT.

    What was paid for is recorded in OUT.ledger.sqlite: the same command run again resumes that job."""
    from ..providers import JobHandle, JobRequest, JobStatus, credential_from_env, get_provider, provider_class
    from ..providers.download import TransferLimits
    from ..providers.flow import FlowHooks, FlowSettings
    from ..safetext import printable
    from ..secrets import redact
    from ..submit import submit as submit_job

    if (audio is None) == (text is None):
        raise ValidationError("give exactly one of --audio or --text")
    if speaker and text is None:
        raise ValidationError("--speaker goes with --text (the provider's TTS)")
    poll = provider_class(provider).default_poll
    if timeout is not None:
        poll = dataclasses.replace(poll, timeout=timeout)
    if poll_interval is not None:
        poll = dataclasses.replace(poll, initial=poll_interval, maximum=max(poll.maximum, poll_interval))
    shown: list[str] = []     # raw statuses already printed, so each change is printed once

    def on_created(handle: JobHandle) -> None:
        click.echo(f"{provider} job {printable(handle.job_id)} created", err=True)

    def on_status(status: JobStatus) -> None:
        if not shown or shown[-1] != status.raw_status:
            shown.append(status.raw_status)
            click.echo(f"  {status.state.value} ({printable(status.raw_status)})", err=True)

    hooks = FlowHooks(on_created=on_created, on_status=on_status)
    settings = FlowSettings(resubmit_uncertain=resubmit_uncertain, retry_failed=retry_failed,
                            transfer=TransferLimits(deadline_s=timeout) if timeout else TransferLimits())
    with get_provider(provider, credential=credential_from_env(provider), poll=poll) as adapter:
        try:
            result = submit_job(adapter, JobRequest(video, audio, text, speaker), out, hooks=hooks, settings=settings)
        except UncertainCreate as err:
            click.echo(f"reconcile: {printable(redact(json.dumps(err.reconcile, default=str)), 4000)}", err=True)
            raise
    if result.started_with != "create":
        click.echo(f"{provider} job {printable(result.job_id)}: resumed from {result.ledger} ({result.started_with})",
                   err=True)
    if as_json:
        emit_json({"ok": True, **result.to_dict()})
    else:
        click.echo(f"{result.output} ({result.size} bytes, sha256 {result.sha256})")
