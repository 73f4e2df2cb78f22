"""Every command stops when asked, at any stage, and leaves nothing half-written; a script too big to be one
is refused before any work."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from media import make_audio, make_video
from runkit import LIPSYNC


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_prepare_stops_mid_encode_and_leaves_nothing(tmp_path, stop):
    clip = make_video(tmp_path / "long.mp4", seconds=20.0, width=1920, height=1080, fps=30, pix_fmt="yuv444p")
    voice = make_audio(tmp_path / "voice.wav", seconds=20.0)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [LIPSYNC, "prepare", "--video", str(clip), "--audio", str(voice), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any(out.glob(".*.part*")):  # the encode has begun writing
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(stop)
    started = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - started < 30  # it did not finish the 20 s encode first
    assert not out.exists() or not list(out.iterdir())


def test_a_script_file_too_big_to_be_a_script_is_refused_at_once(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", seconds=1.0)
    big = tmp_path / "stray.txt"
    big.write_text("All work and no play. " * 250_000, encoding="utf-8")  # 5.5 MB
    run = subprocess.run(
        [LIPSYNC, "prepare", "--video", str(clip), "--text-file", str(big), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 6 and "stray.txt" in run.stderr and "limit" in run.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_run_stops_at_once_while_it_backs_off_from_a_failing_provider(tmp_path):
    """Every request answers 5xx: the upload is retried with growing waits (up to 30 s). A stop request must
    end the wait, not sit it out."""
    import sqlite3

    from runkit import make_batch_media, start_lipsync, write_config

    from pipeline.emulator import Emulator, EmulatorSettings

    media = make_batch_media(tmp_path / "media")
    with Emulator(EmulatorSettings(latency_s=0.2)) as emu:
        emu.faults("pixverse").server_errors = 10_000
        for f in (media.video, media.voice):
            (tmp_path / f.name).symlink_to(f)
        config = write_config(
            tmp_path, [{"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"}], base_urls=emu.base_urls
        )
        proc = start_lipsync("run", str(config), env=emu.env())
        deadline = time.monotonic() + 120
        while True:  # until it is submitting (uploading, and failing)
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                with sqlite3.connect(f"file:{tmp_path / 'out' / 'ledger.sqlite'}?mode=ro", uri=True) as db:
                    if db.execute("SELECT COUNT(*) FROM jobs WHERE stage='submit'").fetchone()[0]:
                        break
            except sqlite3.Error:
                pass
            time.sleep(0.1)
        time.sleep(4.0)  # into the backoff between upload attempts (1 s, 2 s, 4 s, ...)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - started
        assert emu.accepted_creates("pixverse") == 0
    assert proc.returncode == 130, stderr
    assert stopped_in < 5, f"took {stopped_in:.1f} s to stop"
