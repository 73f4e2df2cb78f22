"""`lipsync init [PATH]`: write a commented starter config. Never overwrites a file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

from ..errors import ValidationError
from . import handle_errors


@click.command()
@click.argument("path", default="lipsync.toml", type=click.Path(dir_okay=False, path_type=Path))
@handle_errors
def init(path: Path) -> None:
    """Write a commented starter batch config to PATH (default lipsync.toml)."""
    text = resources.files("pipeline.run").joinpath("starter.toml").read_text(encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise ValidationError(f"{path}: already exists; choose another name or remove it first") from None
    click.echo(f"wrote {path}; edit the [[job]] entries, then: lipsync run {path} --rehearse", err=True)
