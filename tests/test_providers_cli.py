"""`lipsync submit` and `lipsync speakers` as a user runs them: a subprocess pointed at the emulator by env."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from media import media_info
from provider_kit import tiny_media

from pipeline.emulator import Emulator, EmulatorSettings

LIPSYNC = [str(Path(sys.executable).with_name("lipsync"))]
FAST = ["--poll-interval", "0.05"]


@pytest.fixture(scope="module")
def emu():
    with Emulator(EmulatorSettings(latency_s=0.3, queue_s=0.0, output_short_side=96)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tiny_media(tmp_path_factory.mktemp("cli-media"))


@pytest.fixture(autouse=True)
def clean_faults(emu):
    for name in ("pixverse", "aimlapi", "useapi", "fal"):
        emu.faults(name).clear()


def lipsync(emu, *args, env_extra=None, drop=()):
    env = {**os.environ, **emu.env(), **(env_extra or {})}
    for var in drop:
        env.pop(var, None)
    return subprocess.run([*LIPSYNC, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("name", ["pixverse", "fal"])
def test_submit_json_record(emu, media, tmp_path, name):
    video, audio = media
    out = tmp_path / "result.mp4"
    run = lipsync(
        emu,
        "submit",
        "--provider",
        name,
        "--video",
        str(video),
        "--audio",
        str(audio),
        "--out",
        str(out),
        "--json",
        *FAST,
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["ok"] and doc["provider"] == name and doc["job_id"]
    assert f"job {doc['job_id']} created" in run.stderr
    assert doc["states"][-1]["state"] == "succeeded" and doc["seconds"] > 0 and doc["started_with"] == "create"
    assert doc["output"] == str(out) and doc["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert media_info(out)["Audio"] and media_info(out)["Video"]
    created = emu.accepted_creates(name)
    again = lipsync(
        emu,
        "submit",
        "--provider",
        name,
        "--video",
        str(video),
        "--audio",
        str(audio),
        "--out",
        str(out),
        "--json",
        *FAST,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["started_with"] == "reuse" and emu.accepted_creates(name) == created


@pytest.mark.parametrize(
    "name,point",
    [
        ("pixverse", "after_create"),
        ("fal", "poll"),
        ("aimlapi", "upload"),
        ("useapi", "after_send"),
        ("fal", "download"),
    ],
)
def test_a_killed_submit_rerun_with_the_same_arguments_pays_once(emu, media, tmp_path, name, point):
    video, audio = media
    out = tmp_path / "result.mp4"
    args = ["submit", "--provider", name, "--video", str(video), "--audio", str(audio), "--out", str(out), *FAST]
    before = emu.accepted_creates(name)
    killed = lipsync(emu, *args, env_extra={"LIPSYNC_TEST_KILL_AT": point})
    assert killed.returncode == -9, killed.stderr
    resumed = lipsync(emu, *args, "--json")
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert emu.accepted_creates(name) == before + 1
    assert (
        doc["started_with"]
        == {
            "after_create": "poll",
            "poll": "poll",
            "upload": "create",
            "after_send": "reconcile",
            "download": "download",
        }[point]
    )
    assert doc["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() and media_info(out)["Video"]


def test_a_submit_killed_after_sending_is_uncertain_and_never_resent_on_its_own(emu, media, tmp_path):
    video, audio = media
    out = tmp_path / "result.mp4"
    args = ["submit", "--provider", "pixverse", "--video", str(video), "--audio", str(audio), "--out", str(out), *FAST]
    before = emu.accepted_creates("pixverse")
    assert lipsync(emu, *args, env_extra={"LIPSYNC_TEST_KILL_AT": "after_send"}).returncode == -9
    again = lipsync(emu, *args, "--json")
    assert again.returncode == 1 and emu.accepted_creates("pixverse") == before + 1
    doc = json.loads(again.stdout)
    assert doc["error"]["type"] == "UncertainCreate" and "--resubmit-uncertain" in doc["error"]["message"]
    assert "reconcile:" in again.stderr and not out.exists()
    forced = lipsync(emu, *args, "--resubmit-uncertain")
    assert forced.returncode == 0, forced.stderr
    assert emu.accepted_creates("pixverse") == before + 2  # the user chose to pay again


def test_submit_tts_plain_output(emu, media, tmp_path):
    video, _ = media
    out = tmp_path / "tts.mp4"
    run = lipsync(
        emu,
        "submit",
        "--provider",
        "useapi",
        "--video",
        str(video),
        "--text",
        "Hi there.",
        "--speaker",
        "Ava",
        "--out",
        str(out),
        *FAST,
    )
    assert run.returncode == 0, run.stderr
    assert str(out) in run.stdout and out.stat().st_size > 0


@pytest.mark.parametrize(
    "fault,code,words",
    [
        ("moderate", 5, "moderat"),
        ("out_of_credits", 4, ""),
        ("stuck", 2, "not done after"),
        ("drop_after_create", 1, "may exist"),
    ],
)
def test_submit_failures_map_to_exit_codes(emu, media, tmp_path, fault, code, words):
    video, audio = media
    setattr(emu.faults("aimlapi"), fault, 1 if fault == "drop_after_create" else True)
    run = lipsync(
        emu,
        "submit",
        "--provider",
        "aimlapi",
        "--video",
        str(video),
        "--audio",
        str(audio),
        "--out",
        str(tmp_path / "o.mp4"),
        "--timeout",
        "1",
        "--json",
        *FAST,
    )
    assert run.returncode == code, run.stderr
    doc = json.loads(run.stdout)
    assert doc["ok"] is False and doc["error"]["exit_code"] == code and doc["error"]["provider"] == "aimlapi"
    assert words in run.stderr.lower()
    assert not (tmp_path / "o.mp4").exists()
    if fault == "drop_after_create":
        assert "reconcile:" in run.stderr and "fingerprint" in run.stderr


def test_submit_validation(emu, media, tmp_path):
    video, audio = media
    both = lipsync(
        emu,
        "submit",
        "--provider",
        "fal",
        "--video",
        str(video),
        "--audio",
        str(audio),
        "--text",
        "x",
        "--out",
        str(tmp_path / "o.mp4"),
    )
    assert both.returncode == 6 and "exactly one" in both.stderr
    bad_voice = lipsync(
        emu,
        "submit",
        "--provider",
        "fal",
        "--video",
        str(video),
        "--text",
        "x",
        "--speaker",
        "Olivr",
        "--out",
        str(tmp_path / "o.mp4"),
    )
    assert bad_voice.returncode == 6 and "Oliver" in bad_voice.stderr


def test_submit_without_key_is_exit_3_naming_the_variable(emu, media, tmp_path):
    video, audio = media
    before = emu.accepted_creates("useapi")
    run = lipsync(
        emu,
        "submit",
        "--provider",
        "useapi",
        "--video",
        str(video),
        "--audio",
        str(audio),
        "--out",
        str(tmp_path / "o.mp4"),
        drop=("USEAPI_TOKEN",),
    )
    assert run.returncode == 3 and "USEAPI_TOKEN" in run.stderr
    assert emu.accepted_creates("useapi") == before


@pytest.mark.parametrize("name,source", [("pixverse", "api"), ("useapi", "api"), ("aimlapi", "docs"), ("fal", "docs")])
def test_speakers(emu, name, source):
    run = lipsync(emu, "speakers", "--provider", name, "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    voices = {v["name"]: v for v in doc["voices"]}
    assert doc["provider"] == name and len(voices) == 15 and voices["Emily"]["source"] == source
    assert voices["Ethan"]["provider_id"] == ("14" if source == "api" else "Ethan")
    plain = lipsync(emu, "speakers", "--provider", name)
    assert plain.returncode == 0 and "Oliver" in plain.stdout


def test_a_submit_without_its_key_says_which_and_leaves_nothing(emu, media, tmp_path):
    video, audio = media
    out = tmp_path / "result.mp4"
    run = lipsync(
        emu,
        "submit",
        "--provider",
        "fal",
        "--video",
        str(video),
        "--audio",
        str(audio),
        "--out",
        str(out),
        drop=("FAL_KEY",),
    )
    assert run.returncode == 3 and "FAL_KEY" in run.stderr
    assert list(tmp_path.iterdir()) == []
