"""LIPSYNC_FFMPEG points the whole pipeline at another ffmpeg binary."""

import os
import stat
import subprocess
import sys

from media import make_video

from pipeline.ffmpeg import ffmpeg_exe


def test_prepare_runs_the_ffmpeg_named_by_lipsync_ffmpeg(tmp_path):
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "my ffmpeg"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec "{ffmpeg_exe()}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    clip = make_video(tmp_path / "clip.mov", seconds=1, width=160, height=120)
    env = {**os.environ, "LIPSYNC_FFMPEG": str(wrapper)}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "prepare", "--video", str(clip), "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "seg000.mp4").stat().st_size > 0
    assert "seg000" in log.read_text()  # the conform itself went through the wrapper
