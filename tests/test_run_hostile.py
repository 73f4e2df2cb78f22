"""`lipsync run` against hostile surroundings, end to end: a folder holding the user's files, a stray script
that would become many paid jobs, a key a provider echoes back. The emulator counts what was created."""

from __future__ import annotations

import json
import sqlite3

import pytest
from runkit import LONG_SCRIPT, checksums_hold, lipsync, make_batch_media, write_config

from pipeline.emulator import Emulator, EmulatorSettings


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_batch_media(tmp_path_factory.mktemp("media"))


def _batch(folder, media, emu, jobs, **kw):
    for f in (media.video, media.voice, media.script):
        (folder / f.name).symlink_to(f)
    return write_config(folder, jobs, base_urls=emu.base_urls, **kw)


def test_a_folder_with_the_users_files_is_refused_and_force_never_touches_them(tmp_path, media):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    (out / ".draft.x1y2.part.mp4").write_bytes(b"my half-exported file")  # looks like one of our temp names
    (out / "checksums.sha256").write_text("0  notes.txt\n", encoding="utf-8")
    with Emulator(EmulatorSettings(latency_s=0.2)) as emu:
        config = _batch(tmp_path, media, emu, [{"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"}])
        refused = lipsync("run", str(config), env=emu.env())
        assert refused.returncode == 6 and "notes.txt" in refused.stderr and "--force" in refused.stderr
        assert emu.accepted_creates("pixverse") == 0 and not (out / "ledger.sqlite").exists()
        forced = lipsync("run", str(config), "--force", "--json", env=emu.env())
    assert forced.returncode == 0, forced.stderr
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (out / ".draft.x1y2.part.mp4").read_bytes() == b"my half-exported file"
    assert (out / "checksums.sha256").read_text(encoding="utf-8") == "0  notes.txt\n"  # theirs, left alone
    assert json.loads(forced.stdout)["checksums"] is None


def test_checksums_list_exactly_the_delivered_files_and_never_a_symlink(tmp_path, media):
    with Emulator(EmulatorSettings(latency_s=0.2)) as emu:
        config = _batch(tmp_path, media, emu, [{"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"}])
        first = lipsync("run", str(config), env=emu.env())
        assert first.returncode == 0, first.stderr
        (tmp_path / "out" / "voiced" / "passwd").symlink_to("/etc/passwd")  # planted after delivery
        again = lipsync("run", str(config), "--force", env=emu.env())
    assert again.returncode == 0, again.stderr
    assert sorted(checksums_hold(tmp_path / "out")) == [
        "voiced/cuts.edl",
        "voiced/final.mp4",
        "voiced/final_audio.wav",
        "voiced/manifest.json",
        "voiced/timeline.otio",
    ]


def test_a_script_over_the_create_cap_pays_for_nothing(tmp_path, media):
    with Emulator(EmulatorSettings(latency_s=0.2)) as emu:
        config = _batch(tmp_path, media, emu, [{"id": "stray", "video": "clip.mp4", "text": LONG_SCRIPT * 3}])
        text = config.read_text(encoding="utf-8").replace("max_jobs = 4\n", "max_jobs = 4\nmax_creates_per_job = 2\n")
        config.write_text(text, encoding="utf-8")
        run = lipsync("run", str(config), "--json", env=emu.env())
        assert run.returncode == 6, run.stderr
        assert emu.accepted_creates("pixverse") == 0
    job = json.loads(run.stdout)["jobs"][0]
    assert "max_creates_per_job" in job["error"] and "stray" in job["error"]
    assert not list((tmp_path / "out" / ".work").rglob("*.mp4"))  # refused before any conform work


def test_a_key_echoed_by_the_provider_is_hidden_from_status_in_a_shell_without_it(tmp_path, media):
    key = "pv-echoed-secret-0123456789"
    with Emulator(EmulatorSettings(latency_s=0.2, api_keys={"pixverse": "the-right-one"})) as emu:
        config = _batch(tmp_path, media, emu, [{"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"}])
        env = {**emu.env(), "PIXVERSE_API_KEY": key}
        run = lipsync("run", str(config), env=env)
    assert run.returncode == 3 and key not in run.stdout + run.stderr
    with sqlite3.connect(tmp_path / "out" / "ledger.sqlite") as db:  # as an echo would have stored it
        db.execute("UPDATE jobs SET error = ?", (f"provider said: bad key {key}",))
    status = lipsync("status", str(tmp_path / "out"), "--json", env={"PIXVERSE_API_KEY": ""})
    assert status.returncode == 0, status.stderr
    assert key not in status.stdout and "***" in status.stdout
    report = lipsync("report", str(tmp_path / "out"), env={"PIXVERSE_API_KEY": ""})
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert key not in page and key not in report.stdout + report.stderr
