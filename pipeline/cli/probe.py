"""`lipsync probe FILE...`: what each file is, and every provider limit it breaks and why."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..api import ProbeResult
from ..api import probe as probe_file
from ..errors import InputError, worst_exit_code
from ..limits import PROVIDERS
from ..stages.audio_tracks import TrackChoice, audio_streams
from ..stages.probe import AudioStream, MediaProbe, Violation
from . import emit_json, handle_errors, json_option


def _video_line(p: MediaProbe) -> str:
    v = p.video
    assert v is not None  # called for a file with a picture
    parts = [v.codec + (f" {v.profile}" if v.profile else ""), f"{v.width}x{v.height}"]
    if (v.display_width, v.display_height) != (v.width, v.height):
        parts.append(f"(shown {v.display_width}x{v.display_height})")
    if v.rotation:
        parts.append(f"rotated {v.rotation}°")
    parts.append(f"{v.fps:.3f} fps {v.frame_rate_mode}" if v.fps else v.frame_rate_mode)
    parts.append(v.scan_type)
    parts += [x for x in (f"{v.bit_depth}-bit" if v.bit_depth else None, v.chroma_subsampling, v.hdr_transfer) if x]
    return " ".join(parts)


def _audio_line(a: AudioStream) -> str:
    depth = f" {a.bit_depth}-bit" if a.bit_depth else ""
    return f"{a.codec} {a.channels} ch {a.sample_rate} Hz{depth}"


def _track_lines(p: MediaProbe, choice: TrackChoice) -> list[str]:
    """One line per audio track (language, title, default flag, speech share); the voice track is marked."""
    lines = []
    for a in audio_streams(p):
        parts = [
            f"track {a.number}",
            _audio_line(a),
            a.language or "no language",
            f'"{a.title}"' if a.title else "no title",
            "default" if a.default else "not default",
        ]
        if choice.speech_shares:
            parts.append(f"speech {choice.speech_shares[a.index]:.0%}")
        if a.index == choice.index:
            parts.append(f"<- voice ({choice.rule}: {choice.reason})")
        lines.append("  ".join(parts))
    return lines


def _print_file(result: ProbeResult) -> None:
    p, found, voice = result.probe, result.violations, result.voice_track
    duration = f"{p.duration:.2f} s" if p.duration is not None else "unknown length"
    click.echo(f"{p.path}  {p.container}  {duration}  {p.size_bytes / 1e6:.2f} MB")
    if p.video is not None:
        click.echo(f"  video  {_video_line(p)}")
    if voice is not None and len(audio_streams(p)) > 1:
        for line in _track_lines(p, voice):
            click.echo(f"  audio  {line}")
    elif p.audio is not None:
        click.echo(f"  audio  {_audio_line(p.audio)}")
    if p.cover_art:
        click.echo("  cover art (ignored)")
    for warning in p.warnings:
        click.echo(f"  note   {warning}")
    groups: dict[tuple[str, ...], tuple[list[Violation], list[str]]] = {}  # providers with the same verdict
    for name, violations in found.items():
        groups.setdefault(tuple(v.reason for v in violations), (violations, []))[1].append(name)
    for violations, names in groups.values():
        who = "every provider" if len(names) == len(PROVIDERS) else ", ".join(names)
        if not violations:
            click.echo(f"  ok     within the limits of {who}")
        for v in violations:
            click.echo(f"  limit  {v.limit} ({who}): {v.reason}")


@click.command("probe")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
@click.option("--provider", type=click.Choice(PROVIDERS), help="Check one provider's limits (default: all).")
@json_option
@handle_errors
def probe(files: tuple[str, ...], provider: str | None, as_json: bool) -> None:
    """Describe media files and list every provider limit each one breaks."""
    docs: list[dict[str, Any]] = []
    codes: list[int] = []
    for path in files:
        try:
            result = probe_file(path, provider=provider)
        except InputError as err:
            codes.append(err.exit_code)
            docs.append({"path": path, "error": err.to_dict()})
            if not as_json:
                click.echo(f"error: {err.render()}", err=True)
            continue
        codes.append(0)
        docs.append({"path": path, **result.to_dict()})
        if not as_json:
            _print_file(result)
    code = worst_exit_code(codes)
    if as_json:
        emit_json({"ok": code == 0, "files": docs})
    sys.exit(code)
