"""`lipsync init [PATH]`: write a commented starter config. Never overwrites a file.

In a checkout with the bundled samples, the starter's jobs point at them, so `lipsync run PATH --rehearse`
works as written; elsewhere they name placeholder files, and init says which ones to provide.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from string import Template

import click

from ..errors import ValidationError
from . import handle_errors

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
# starter placeholder -> (the bundled sample, the file a user would provide)
FILES = {
    "intro_video": ("presenter_720p.mp4", "footage/intro.mp4"),
    "intro_audio": ("voice.wav", "voice/intro.wav"),
    "outro_video": ("phone_portrait.mov", "footage/outro.mov"),
    "outro_text": ("voice.txt", "scripts/outro.txt"),
}


def starter_files(config: Path, samples: Path) -> tuple[dict[str, str], bool]:
    """The starter's file paths (relative to the config's folder, as configs read them); True when they are
    the bundled samples."""
    if all((samples / sample).is_file() for sample, _ in FILES.values()):
        base = config.resolve().parent
        inside = base.is_relative_to(samples.parent)  # a config in the checkout; elsewhere "../../.." is no help
        return {
            key: (Path(os.path.relpath(samples / sample, base)) if inside else samples / sample).as_posix()
            for key, (sample, _) in FILES.items()
        }, True
    return {key: placeholder for key, (_, placeholder) in FILES.items()}, False


@click.command()
@click.argument("path", default="lipsync.toml", type=click.Path(dir_okay=False, path_type=Path))
@handle_errors
def init(path: Path) -> None:
    """Write a commented starter batch config to PATH (default lipsync.toml)."""
    files, samples = starter_files(path, SAMPLES)
    note = (
        "These jobs use the bundled samples, so a --rehearse run works as written: put your own files in."
        if samples
        else "Put your files where these paths say (relative to this file), or change the paths."
    )
    template = resources.files("pipeline.run").joinpath("starter.toml").read_text(encoding="utf-8")
    text = Template(template).substitute(files, files_note=note)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise ValidationError(f"{path}: already exists; choose another name or remove it first") from None
    if samples:
        click.echo(f"wrote {path} (its jobs use the bundled samples); try it: lipsync run {path} --rehearse", err=True)
    else:
        click.echo(
            f"wrote {path}; provide {', '.join(files.values())} (relative to {path}) or edit its "
            f"[[job]] entries, then: lipsync run {path} --rehearse",
            err=True,
        )
