from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from media import make_audio, make_video, media_info

from pipeline.ffmpeg import ffmpeg_exe
from pipeline.stages.handoff import (
    CHECKSUMS_NAME,
    FINAL_NAME,
    MANIFEST_NAME,
    InputFile,
    Manifest,
    ProviderJob,
    tool_versions,
    write_checksums,
    write_handoff,
)

SHA256SUM = shutil.which("sha256sum")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(inputs: list[InputFile], **overrides) -> Manifest:
    fields = {
        "job_id": "intro",
        "created_at": 1_700_000_000.0,
        "inputs": inputs,
        "config": {"run": {"provider": "fal", "out": "out"}, "job": [{"id": "intro", "video": "clip.mp4"}]},
        "provider_jobs": [
            ProviderJob(
                provider="fal",
                endpoint="fal-ai/pixverse/lipsync",
                job_id="req-1",
                poll_count=7,
                credits=0.2,
                created_at=1_700_000_001.0,
            )
        ],
        "ffmpeg_commands": [["ffmpeg", "-i", "clip.mp4", "out.mp4"]],
        "tools": tool_versions(),
    }
    return Manifest(**(fields | overrides))


@pytest.fixture
def media(tmp_path):
    cfg_dir = tmp_path / "project"
    clip = make_video(tmp_path / "footage" / "clip.mp4", seconds=1.0)
    voice = make_audio(tmp_path / "footage" / "voice.wav", seconds=1.0)
    final = make_video(tmp_path / "scratch" / "result.mp4", seconds=1.0, width=160, height=120)
    cfg_dir.mkdir()
    return cfg_dir, clip, voice, final


def test_delivered_folder_has_final_manifest_and_valid_checksums(tmp_path, media):
    cfg_dir, clip, voice, final = media
    out = tmp_path / "out"
    inputs = [InputFile.describe("video", clip, cfg_dir), InputFile.describe("audio", voice, cfg_dir)]
    written = write_handoff(out / "intro", final, _manifest(inputs), extra_files=[voice])
    write_checksums(out)

    job = out / "intro"
    assert sorted(p.name for p in job.iterdir()) == sorted([FINAL_NAME, MANIFEST_NAME, "voice.wav"])
    assert _sha(job / FINAL_NAME) == _sha(final) and final.exists()  # copied, never moved
    doc = json.loads((job / MANIFEST_NAME).read_text())
    assert doc == written.model_dump(mode="json")
    assert Manifest.model_validate_json((job / MANIFEST_NAME).read_text()) == written  # readable back
    assert {d["name"]: d["sha256"] for d in doc["delivered"]} == {FINAL_NAME: _sha(final), "voice.wav": _sha(voice)}
    assert doc["inputs"][0]["path"] == "../footage/clip.mp4"
    assert doc["inputs"][0]["sha256"] == _sha(clip) and doc["inputs"][0]["size_bytes"] == clip.stat().st_size
    summary = doc["inputs"][0]["probe"]
    assert summary["path"] == "../footage/clip.mp4" and summary["video"]["width"] == 320
    assert doc["inputs"][1]["probe"]["audio"]["sample_rate"] == int(media_info(voice)["Audio"][0].sampling_rate)
    assert doc["provider_jobs"][0]["poll_count"] == 7

    listed = (out / CHECKSUMS_NAME).read_text().splitlines()
    assert sorted(line.split("  ", 1)[1] for line in listed) == [
        "intro/final.mp4",
        "intro/manifest.json",
        "intro/voice.wav",
    ]
    if SHA256SUM:
        ok = subprocess.run([SHA256SUM, "-c", CHECKSUMS_NAME], cwd=out, capture_output=True, text=True)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        with open(job / FINAL_NAME, "r+b") as f:  # a damaged delivery must be caught
            f.seek(100)
            f.write(b"\x00\xff")
        bad = subprocess.run([SHA256SUM, "-c", CHECKSUMS_NAME], cwd=out, capture_output=True, text=True)
        assert bad.returncode != 0 and "intro/final.mp4: FAILED" in bad.stdout


def test_checksums_cover_exactly_the_given_files_and_escape_odd_names(tmp_path):
    out = tmp_path / "out"
    (out / ".work" / "a").mkdir(parents=True)
    (out / ".work" / "a" / "prepared.mp4").write_bytes(b"scratch")
    (out / "ledger.sqlite").write_bytes(b"db")
    (out / "job 1").mkdir()
    (out / "job 1" / ".final.x1.part.mp4").write_bytes(b"half")
    (out / "job 1" / "final.mp4").write_bytes(b"video")
    (out / "job 1" / "odd\\name.txt").write_bytes(b"backslash")
    (out / "job 1" / "notes.txt").write_bytes(b"the user's")
    (out / "report.json").write_text("{}")
    write_checksums(out, ["job 1/final.mp4", out / "job 1" / "odd\\name.txt", "job 1/manifest.json"])
    lines = (out / CHECKSUMS_NAME).read_text().splitlines()
    assert len(lines) == 2  # the missing manifest is left out, nothing else is added
    assert f"{hashlib.sha256(b'video').hexdigest()}  job 1/final.mp4" in lines
    # GNU's form for a name with a backslash: a leading backslash, and the name's backslash doubled
    assert f"\\{hashlib.sha256(b'backslash').hexdigest()}  job 1/odd\\\\name.txt" in lines
    if SHA256SUM:
        ok = subprocess.run([SHA256SUM, "-c", "--strict", CHECKSUMS_NAME], cwd=out, capture_output=True, text=True)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.count(": OK") == 2


def test_manifest_json_is_deterministic_and_hashes_the_config(tmp_path, media):
    cfg_dir, clip, _, _ = media
    inputs = [InputFile.describe("video", clip, cfg_dir)]
    a, b = _manifest(inputs).to_json(), _manifest(inputs).to_json()
    assert a == b
    doc = json.loads(a)
    assert a == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    reordered = _manifest(
        inputs, config={"job": [{"video": "clip.mp4", "id": "intro"}], "run": {"out": "out", "provider": "fal"}}
    )
    changed = _manifest(inputs, config={"run": {"provider": "useapi", "out": "out"}})
    assert reordered.config_sha256 == doc["config_sha256"]
    assert changed.config_sha256 != doc["config_sha256"]
    assert len(doc["config_sha256"]) == 64


def test_no_key_from_the_environment_reaches_the_manifest(tmp_path, media, monkeypatch):
    cfg_dir, clip, _, final = media
    secret = "fal-key-0123456789abcdef"
    monkeypatch.setenv("FAL_KEY", secret)
    leaky = _manifest(
        [InputFile.describe("video", clip, cfg_dir)],
        config={"run": {"provider": "fal", "note": f"Authorization: Key {secret}"}},
        provider_jobs=[
            ProviderJob(
                provider="fal", endpoint="queue", job_id="r", result_url=f"https://cdn.example/x.mp4?key={secret}"
            )
        ],
    )
    write_handoff(tmp_path / "out" / "j", final, leaky)
    write_checksums(tmp_path / "out")
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert "***" in (tmp_path / "out" / "j" / MANIFEST_NAME).read_text()


def test_handoff_is_idempotent_when_the_final_is_already_in_place(tmp_path, media):
    cfg_dir, clip, _, final = media
    job = tmp_path / "out" / "j"
    job.mkdir(parents=True)
    placed = job / FINAL_NAME
    shutil.copyfile(final, placed)
    m = _manifest([InputFile.describe("video", clip, cfg_dir)])
    first = write_handoff(job, placed, m)
    again = write_handoff(job, placed, m)
    assert first == again and _sha(placed) == _sha(final)
    assert sorted(p.name for p in job.iterdir()) == [FINAL_NAME, MANIFEST_NAME]


def test_tool_versions_are_the_real_ones():
    tools = tool_versions()
    first_line = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    assert tools.ffmpeg and tools.ffmpeg in first_line
    assert tools.packages["pydantic"] == importlib.metadata.version("pydantic")
    assert tools.mediainfo[0].isdigit()
    assert tools.python.count(".") == 2


def _deliverable(name: str) -> bool:
    return (
        name not in (".", "..", CHECKSUMS_NAME)
        and not name.startswith(".")
        and not any(word in name for word in (".part", ".sqlite", ".db"))
    )


@pytest.mark.skipif(SHA256SUM is None, reason="GNU sha256sum not installed")
@settings(max_examples=25, deadline=None)
@given(
    names=st.lists(
        st.text(
            st.one_of(
                st.sampled_from(" \\\n\r*'\"$ä中"),
                st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
            ),
            min_size=1,
            max_size=12,
        ).filter(_deliverable),
        min_size=1,
        max_size=4,
        unique=True,
    )
)
def test_any_file_name_round_trips_through_sha256sum(tmp_path_factory, names):
    """Spaces, backslashes, newlines, any script: `sha256sum -c` reads back every line we write."""
    out = tmp_path_factory.mktemp("names")
    (out / "job").mkdir()
    for i, name in enumerate(names):
        (out / "job" / name).write_bytes(f"content {i}".encode())
    write_checksums(out, [f"job/{name}" for name in names])
    ok = subprocess.run([SHA256SUM, "-c", "--strict", CHECKSUMS_NAME], cwd=out, capture_output=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count(b": OK") == len(names)


def test_a_new_handoff_removes_only_what_the_previous_one_delivered(tmp_path, media):
    cfg_dir, clip, voice, final = media
    job = tmp_path / "out" / "j"
    m = _manifest([InputFile.describe("video", clip, cfg_dir)])
    write_handoff(job, final, m, extra_files=[voice])
    (job / "notes.txt").write_text("the user's own file")
    write_handoff(job, final, m)  # the job became a TTS job: no WAV any more
    assert sorted(p.name for p in job.iterdir()) == [FINAL_NAME, MANIFEST_NAME, "notes.txt"]
