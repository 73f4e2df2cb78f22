"""docs/api.md and the README's Python run as written: every ```python block, in order, in one namespace, in a
folder holding the media they name (made here), against the emulator (`rehearse=True`)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from image_media import exif_rotated_jpeg
from runkit import final_file, make_batch_media

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(path.read_text(encoding="utf-8")) if lang == language]


def run_blocks(code: list[str], where: Path, monkeypatch) -> dict:
    monkeypatch.chdir(where)
    namespace: dict = {"__name__": "docs"}
    for number, body in enumerate(code):
        exec(compile(body, f"block {number}", "exec"), namespace)
    return namespace


def test_api_md_examples_run(tmp_path, monkeypatch):
    media = make_batch_media(tmp_path / "media")
    shutil.copyfile(media.video, tmp_path / "clip.mp4")
    shutil.copyfile(media.voice, tmp_path / "voice.wav")
    exif_rotated_jpeg(tmp_path / "presenter.jpg")
    doc = ROOT / "docs" / "api.md"
    (tmp_path / "batch.toml").write_text(blocks(doc, "toml")[0], encoding="utf-8")

    done = run_blocks(blocks(doc, "python"), tmp_path, monkeypatch)

    assert done["summary"].exit_code == 0
    assert final_file(tmp_path / "out" / "talk" / "final.mp4").video_s == pytest.approx(2.0, abs=0.2)
    assert final_file(tmp_path / "portrait.mp4").audio_s > 0.5
    assert (tmp_path / "synced.mp4").is_file() and (tmp_path / "spoken.mp4").is_file()


def test_readme_python_delivers_a_rehearsal_job(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    shutil.copyfile(ROOT / "configs" / "rehearsal.toml", tmp_path / "configs" / "rehearsal.toml")
    os.symlink(ROOT / "samples", tmp_path / "samples")  # read only; the run writes into tmp_path/out
    (code,) = blocks(ROOT / "README.md", "python")
    assert len(code.strip().splitlines()) == 3

    run_blocks([code], tmp_path, monkeypatch)

    final = tmp_path / "out" / "rehearsal" / "voice-track" / "final.mp4"
    assert final_file(final).video_s > 1 and (final.parent / "manifest.json").is_file()
