"""`lipsync speakers`: the TTS voices a provider offers, and what it calls each one."""

from __future__ import annotations

import click

from ..limits import PROVIDERS
from . import emit_json, handle_errors, json_option


@click.command()
@click.option("--provider", required=True, type=click.Choice(PROVIDERS))
@json_option
@handle_errors
def speakers(provider: str, as_json: bool) -> None:
    """List PROVIDER's TTS voices (from its API where it has a list, else from its documented schema)."""
    from ..providers import credential_from_env, get_provider

    with get_provider(provider, credential=credential_from_env(provider)) as adapter:
        voices = adapter.voices()
    if as_json:
        emit_json({"provider": provider, "voices": [v.to_dict() for v in voices]})
        return
    for v in voices:
        click.echo(f"{v.provider_id:>6}  {v.name}")
    if voices and voices[0].source == "docs":
        click.echo(f"({provider} has no voice list endpoint: these are its documented voice names)", err=True)
