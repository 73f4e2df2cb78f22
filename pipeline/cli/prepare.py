"""`lipsync prepare`: conform footage plus a voice track or a script into provider-ready segments."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from ..errors import ValidationError
from ..stages.sync import DEFAULT_SYNC_MODE, SyncMode
from . import emit_json, handle_errors, json_option

SYNC_MODES = ", ".join(m.value for m in SyncMode)


def _number(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValidationError(f"{option} must be a number (got {value!r})") from None


def _track_number(value: str | None) -> int | None:
    number = _number(value, "--audio-track")
    if number is not None and number != int(number):
        raise ValidationError(f"--audio-track must be a whole number (got {value!r})")
    return None if number is None else int(number)


# Values are checked by the library, not by click: a bad one is a validation error (exit 6) with the
# same one-line message as everywhere else, not a click usage error (exit 2, which means "timeout" here).
@click.command()
@click.option("--video", "video", type=click.Path(path_type=Path), help="The footage (mp4, mov, mkv, webm...).")
@click.option("--audio", type=click.Path(path_type=Path), help="A voice track (any audio, or a video's sound).")
@click.option(
    "--audio-track",
    metavar="N",
    help="Which audio track is the voice (1 = the first, see `lipsync probe`); "
    "default: the one flagged default, else the one with the most speech.",
)
@click.option("--text", help="A script for TTS.")
@click.option("--text-file", type=click.Path(path_type=Path), help="A UTF-8 file holding the script.")
@click.option("--speaker", metavar="NAME", help="TTS voice name (see `lipsync speakers`); default Auto.")
@click.option("--provider", metavar="NAME", help="Prepare for this provider's limits (default: the strictest of all).")
@click.option(
    "--sync-mode",
    metavar="MODE",
    default=DEFAULT_SYNC_MODE.value,
    show_default=True,
    help=f"Length policy: {SYNC_MODES}.",
)
@click.option("--start", metavar="SECONDS", help="Use the video from this second.")
@click.option("--end", metavar="SECONDS", help="Use the video up to this second.")
@click.option("--loudness", metavar="LUFS", help="Integrated loudness target of the voice track (default -16).")
@click.option("--true-peak", metavar="DBTP", help="True-peak ceiling of the voice track (default -1.5).")
@click.option(
    "--require-face",
    is_flag=True,
    help="Refuse (exit 6) when a segment shows no usable face (too rarely, or too small).",
)
@click.option(
    "--long-media",
    type=click.Choice(["split", "trim"]),
    default="split",
    show_default=True,
    help="Footage longer than one provider job: split it into segments (cut at pauses), or trim it.",
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Directory for the prepared files.")
@json_option
@handle_errors
def prepare(
    video: Path | None,
    audio: Path | None,
    audio_track: str | None,
    text: str | None,
    text_file: Path | None,
    speaker: str | None,
    provider: str | None,
    sync_mode: str,
    start: str | None,
    end: str | None,
    loudness: str | None,
    true_peak: str | None,
    require_face: bool,
    long_media: Literal["split", "trim"],  # click.Choice above
    out_dir: Path | None,
    as_json: bool,
) -> None:
    """Write conformed segments (seg000.mp4, seg000.wav, ...) into --out; with --json, describe them on stdout.

    The voice is --audio, else TTS of --text/--text-file (one segment per chunk), else the video's own sound.
    """
    from ..api import prepare_media
    from ..prepare import read_text_file

    if video is None or out_dir is None:
        raise ValidationError("--video and --out are required")
    if text is not None and text_file is not None:
        raise ValidationError("give --text or --text-file, not both")
    try:
        mode = SyncMode(sync_mode.lower())
    except ValueError:
        raise ValidationError(f"unknown --sync-mode {sync_mode!r}; choose one of {SYNC_MODES}") from None
    result = prepare_media(
        video,
        out_dir=out_dir,
        audio=audio,
        text=read_text_file(text_file) if text_file is not None else text,
        speaker=speaker,
        provider=provider,
        sync_mode=mode,
        start=_number(start, "--start"),
        end=_number(end, "--end"),
        audio_track=_track_number(audio_track),
        loudness=_number(loudness, "--loudness"),
        true_peak=_number(true_peak, "--true-peak"),
        require_face=require_face,
        long_media=long_media,
    )
    if as_json:
        emit_json({"ok": True, **result.to_dict()})
        return
    for seg in result.segments:
        voice = seg.audio.name if seg.audio else f"TTS {seg.speaker}: {seg.text!r}"
        cut = f"  ({seg.cut_reason})" if seg.cut_reason else ""
        click.echo(f"{seg.video}  {seg.start:.3f}-{seg.end:.3f} s  {voice}{cut}")
