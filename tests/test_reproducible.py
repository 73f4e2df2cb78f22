"""Same inputs and settings give the same bytes, whatever the machine's load and the run's concurrency.

The clip is conformed by a run of its own, then inside a busy batch pinned to one CPU (where ffmpeg's own
thread choice would differ) while other jobs conform beside it; every file we write for it must match.
"""

from __future__ import annotations

import os
import subprocess

from media import make_audio, make_video
from runkit import LIPSYNC, sha256, write_config

from pipeline.emulator import Emulator, EmulatorSettings


def _run(config, env, *, one_cpu: bool) -> subprocess.CompletedProcess:
    pin = (lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) if one_cpu else None
    return subprocess.run(
        [LIPSYNC, "run", str(config)],
        env={**os.environ, "LIPSYNC_POLL_INTERVAL": "0.1", **env},
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=pin,
    )


def _written(run_dir, job_id) -> dict[str, str]:
    """Every media file the run wrote for a job: its conformed segments, the provider result, the finals."""
    files = [
        *run_dir.glob(f".work/{job_id}/prepare-*/seg*"),
        *run_dir.glob(f".work/{job_id}/provider-*.mp4"),
        run_dir / job_id / "final.mp4",
        run_dir / job_id / "final_audio.wav",
    ]
    return {f.name if "provider-" not in f.name else "provider.mp4": sha256(f) for f in files}


def test_a_clip_conforms_to_the_same_bytes_alone_and_in_a_busy_pinned_batch(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    make_video(
        media / "clip.mp4", seconds=3.0, width=1280, height=720, fps=30, pix_fmt="yuv444p", grain=20
    )  # re-encoded
    make_audio(media / "voice.wav", seconds=3.0, rate=44100)
    alone, busy = tmp_path / "alone", tmp_path / "busy"
    for folder in (alone, busy):
        folder.mkdir()
        for f in media.iterdir():
            (folder / f.name).symlink_to(f)
    with Emulator(EmulatorSettings(latency_s=0.2)) as emu:
        job = {"video": "clip.mp4", "audio": "voice.wav"}
        first = write_config(alone, [{"id": "clip", **job}], base_urls=emu.base_urls)
        crowd = write_config(
            busy, [{"id": "clip", **job}, *({"id": f"other{i}", **job} for i in range(3))], base_urls=emu.base_urls
        )
        one = _run(first, emu.env(), one_cpu=False)
        many = _run(crowd, emu.env(), one_cpu=True)
    assert one.returncode == 0, one.stderr
    assert many.returncode == 0, many.stderr
    reference = _written(alone / "out", "clip")
    assert len(reference) == 5  # two conformed segment files, the provider result, two finals
    assert _written(busy / "out", "clip") == reference
    for i in range(3):  # the jobs beside it, conformed at the same time, came out the same too
        assert _written(busy / "out", f"other{i}") == reference
