"""`lipsync verify FILE [--audio MASTER]`: the delivery checks on any file, lips against the sound included."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import emit_json, handle_errors, json_option

if TYPE_CHECKING:
    from ..stages.verify import VerifyReport


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--audio",
    "master",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The master voice track: its offset against FILE's sound is checked too.",
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0),
    default=None,
    help="Lip-sync confidence (standard deviations above chance) a file needs; default 3.",
)
@json_option
@handle_errors
def verify(file: Path, master: Path | None, min_confidence: float | None, as_json: bool) -> None:
    """Check FILE: streams, a clean decode, durations, a face, the lips against the sound (offset in frames and
    confidence) and, with --audio, the sound against MASTER. Exit 0: it passes; 5: the lips or the sound fail;
    6: not a media file."""
    from ..api import verify as verify_file

    report = verify_file(file, audio=master, min_confidence=min_confidence)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print(report)
    sys.exit(0 if report.ok else 5)


def _print(report: VerifyReport) -> None:
    for c in report.checks:
        mark = "ok  " if c.ok else "FAIL"
        click.echo(f"{mark} {c.name:<14} {c.measured!s:<26} allowed {c.allowed!s:<24} {c.detail}")
    for score in report.lip_sync:
        face = score.face or {}
        click.echo(
            f"face: in {face.get('face_share', 0):.0%} of sampled frames, size {face.get('main_size')}, "
            f"up to {face.get('max_faces', 0)} faces"
        )
        if score.status == "ok":
            assert score.offset_s is not None  # an "ok" score has its figures
            click.echo(
                f"lip sync: offset {score.offset_frames:+d} frames ({score.offset_s * 1000:+.0f} ms), "
                f"r={score.correlation:.2f}, confidence {score.confidence:.1f} sd"
            )
        else:
            click.echo(f"lip sync: {score.status}")
    click.echo("passed" if report.ok else "failed")
