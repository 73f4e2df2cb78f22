"""Helpers for the batch-run tests: tiny inputs, configs, running `lipsync run` as a real process,
and reading results back independently (pymediainfo, sha256sum format)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from media import make_audio, make_video, media_info

LONG_SCRIPT = (
    "Welcome back to the studio. Today we are looking at three ways to light a small room without buying "
    "anything new. First, move the desk to the window and let the daylight do the work. Second, bounce a "
    "desk lamp off the ceiling to soften the shadows. Third, use a white sheet as a reflector."
)


LIPSYNC = str(Path(sys.executable).with_name("lipsync"))


@dataclass(frozen=True)
class BatchMedia:
    video: Path  # 2 s, 160x120, with a camera-mic tone
    voice: Path  # 2 s of speech-like audio
    script: Path  # long enough to become several TTS jobs


def make_batch_media(folder: Path) -> BatchMedia:
    folder.mkdir(parents=True, exist_ok=True)
    video = make_video(folder / "clip.mp4", seconds=2.0, width=160, height=120, fps=25)
    voice = make_audio(folder / "voice.wav", seconds=2.0, rate=24000)
    script = folder / "script.txt"
    script.write_text(LONG_SCRIPT, encoding="utf-8")
    return BatchMedia(video, voice, script)


def write_config(
    folder: Path,
    jobs: list[dict],
    *,
    provider: str = "pixverse",
    base_urls: dict | None = None,
    latency_s: float = 0.3,
    max_jobs: int = 4,
    name: str = "t",
) -> Path:
    """A config beside the media in `folder`; each job dict holds the [[job]] keys."""
    lines = [
        f'[run]\nname = "{name}"\nprovider = "{provider}"\noutput = "out"\nmax_jobs = {max_jobs}\n',
        f"[run.rehearse]\nlatency_s = {latency_s}\n",
        '[defaults]\nsync_mode = "cut"\n',
    ]
    if base_urls:
        lines.append("[run.base_urls]\n" + "".join(f'{k} = "{v}"\n' for k, v in base_urls.items()))
    for job in jobs:
        lines.append("[[job]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in job.items()))
    path = folder / "batch.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_batch(folder: Path, media: BatchMedia, jobs: list[dict], **kw) -> Path:
    """The batch media linked into `folder`, and a config there naming them (see `write_config`)."""
    for f in (media.video, media.voice, media.script):
        (folder / f.name).symlink_to(f)
    return write_config(folder, jobs, **kw)


def lipsync(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """`lipsync ARGS` as a separate process (the way users run it), with `env` added to ours."""
    full_env = {**os.environ, "LIPSYNC_POLL_INTERVAL": "0.1", **(env or {})}
    return subprocess.run([LIPSYNC, *args], env=full_env, capture_output=True, text=True, timeout=timeout)


def start_lipsync(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "LIPSYNC_POLL_INTERVAL": "0.1", **(env or {})}
    return subprocess.Popen([LIPSYNC, *args], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def checksums_hold(run_dir: Path) -> list[str]:
    """Check `checksums.sha256` as `sha256sum -c` would; returns the names it lists."""
    names = []
    for line in (run_dir / "checksums.sha256").read_text(encoding="utf-8").splitlines():
        digest, name = line.split("  ", 1)
        assert sha256(run_dir / name) == digest, f"{name}: checksum mismatch"
        names.append(name)
    return names


@dataclass(frozen=True)
class FinalFile:
    width: int
    height: int
    video_s: float
    audio_s: float


def final_file(path: Path) -> FinalFile:
    """The delivered file's streams, read with pymediainfo directly (not through pipeline.stages.probe)."""
    tracks = media_info(path)
    video, audio = tracks["Video"][0], tracks["Audio"][0]
    return FinalFile(int(video.width), int(video.height), float(video.duration) / 1000, float(audio.duration) / 1000)


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()
