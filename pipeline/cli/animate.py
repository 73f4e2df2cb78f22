"""`lipsync animate`: a talking portrait from a still image (AI/ML API `pixverse/v5/image-to-video`), each
clip paid for once (rerun the same command to resume). Job ids go to stderr as soon as they exist."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ValidationError
from ..limits import DEFAULT_MAX_CREATES_PER_JOB
from . import emit_json, handle_errors, json_option
from .submit import flow_options, printing_hooks, reconcile_shown

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.option(
    "--image", required=True, type=_FILE, help="Still image (JPEG, PNG, WebP, TIFF, BMP; HEIC with the extra)."
)
@click.option("--prompt", required=True, help="What the clip shows (camera, mood, motion).")
@click.option("--text", help="The script to speak.")
@click.option("--text-file", type=_FILE, help="The script to speak, from a UTF-8 file.")
@click.option("--speaker", default="Auto", show_default=True, help="TTS voice (`lipsync speakers --provider aimlapi`).")
@click.option("--resolution", help="360p, 540p, 720p or 1080p (default 720p).")
@click.option(
    "--duration",
    type=click.Choice(["5", "8"]),
    help="Clip seconds (default: the shortest that holds the script; 1080p takes 5 only).",
)
@click.option("--style", help="anime, 3d_animation, clay, comic or cyberpunk.")
@click.option("--negative-prompt", help="What the clip should not show.")
@click.option("--seed", type=int, help="Seed for a repeatable generation.")
@click.option("--background", default="#ffffff", show_default=True, help="Colour transparent pixels become.")
@click.option(
    "--max-clips",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_CREATES_PER_JOB,
    show_default=True,
    help="Most paid clips a --chain may make; a longer script is refused before any.",
)
@click.option(
    "--chain",
    is_flag=True,
    help="Speak a long script over several clips, each from the last frame of the one before, stitched into one file.",
)
@click.option("--provider", default="aimlapi", type=click.Choice(["aimlapi"]), show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Result .mp4 to write.")
@flow_options
@json_option
@handle_errors
def animate(
    image: Path,
    prompt: str,
    text: str | None,
    text_file: Path | None,
    speaker: str,
    resolution: str | None,
    duration: str | None,
    style: str | None,
    negative_prompt: str | None,
    seed: int | None,
    background: str,
    max_clips: int,
    chain: bool,
    provider: str,
    out: Path,
    timeout: float | None,
    poll_interval: float | None,
    resubmit_uncertain: bool,
    retry_failed: bool,
    as_json: bool,
) -> None:
    """Animate IMAGE speaking TEXT, wait for the result and write it to OUT (verified).

    What was paid for is recorded in OUT.ledger.sqlite, the conformed image and clips in OUT.work/: the
    same command run again resumes those jobs."""
    from ..api import animate_image
    from ..prepare import read_text_file

    if (text is None) == (text_file is None):
        raise ValidationError("give exactly one of --text or --text-file")
    if text_file is not None:
        text = read_text_file(text_file)
    assert text is not None
    with reconcile_shown():
        result = animate_image(
            image,
            prompt=prompt,
            text=text,
            out=out,
            speaker=speaker,
            resolution=resolution,
            duration=int(duration) if duration else None,
            style=style,
            negative_prompt=negative_prompt,
            seed=seed,
            background=background,
            chain=chain,
            max_clips=max_clips,
            provider=provider,
            timeout=timeout,
            poll_interval=poll_interval,
            resubmit_uncertain=resubmit_uncertain,
            retry_failed=retry_failed,
            hooks=printing_hooks(provider),
        )
    if as_json:
        emit_json({"ok": True, **result.to_dict()})
        return
    figures = result.assembled.verification.figures
    click.echo(
        f"{result.output} ({result.size} bytes, sha256 {result.sha256}): {len(result.clips)} clip(s), "
        f"first-frame SSIM {figures.first_frame_ssim}, speech {figures.speech_s} s"
    )
