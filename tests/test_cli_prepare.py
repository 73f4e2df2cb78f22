"""`lipsync prepare` as a user runs it: a subprocess, one JSON document on stdout, one-line errors, exit 6."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from loudness import r128_of
from media import decode_stats, make_audio, make_video

LIPSYNC = [str(Path(sys.executable).parent / "lipsync")]


def lipsync(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_TOKEN"))}
    return subprocess.run([*LIPSYNC, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("cli") / "talking head ü.mp4", seconds=2)


def test_json_output_is_one_document_with_segments(clip, tmp_path):
    voice = make_audio(tmp_path / "my voice.wav", seconds=3)
    done = lipsync("prepare", "--video", clip, "--audio", voice, "--out", tmp_path / "out dir", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)  # nothing else on stdout
    (seg,) = doc["segments"]
    assert set(seg) >= {"video", "audio", "text", "start", "end"}
    assert seg["text"] is None and seg["start"] == 0.0 and seg["end"] == pytest.approx(2.0)
    assert Path(seg["video"]) == tmp_path / "out dir" / "seg000.mp4"  # absolute, whatever the cwd
    assert Path(seg["audio"]) == tmp_path / "out dir" / "seg000.wav"
    assert decode_stats(seg["video"]).video_seconds == pytest.approx(3.0, abs=0.04)
    assert "seg000" in done.stderr  # progress goes to stderr


def test_a_script_file_gives_one_segment_per_chunk(clip, tmp_path):
    script = tmp_path / "script.txt"
    script.write_text("\ufeff" + "This sentence is here to fill the chunk nicely. " * 12, encoding="utf-8")
    done = lipsync(
        "prepare",
        "--video",
        clip,
        "--text-file",
        script,
        "--speaker",
        "james",
        "--sync-mode",
        "cut",
        "--provider",
        "fal",
        "--out",
        tmp_path / "o",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    segs = json.loads(done.stdout)["segments"]
    assert len(segs) == 3
    assert all(s["audio"] is None and s["speaker"] == "James" and len(s["text"]) <= 200 for s in segs)
    assert [Path(s["video"]).name for s in segs] == ["seg000.mp4", "seg001.mp4", "seg002.mp4"]
    assert segs[-1]["end"] == pytest.approx(2.0)


def test_the_loudness_target_is_configurable(clip, tmp_path):
    voice = make_audio(tmp_path / "voice.wav", seconds=2, level_db=-30)
    done = lipsync(
        "prepare",
        "--video",
        clip,
        "--audio",
        voice,
        "--loudness",
        "-23",
        "--true-peak",
        "-2",
        "--out",
        tmp_path / "o",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (audio,) = json.loads(done.stdout)["audios"]
    assert audio["plan"]["target"] == {"integrated": -23.0, "true_peak": -2.0}
    assert r128_of(audio["path"]).integrated == pytest.approx(-23.0, abs=1.0)


def test_human_output_lists_the_segments(clip, tmp_path):
    done = lipsync(
        "prepare", "--video", clip, "--text", "Hello there.", "--out", tmp_path, "--sync-mode", "cut", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "seg000.mp4" in done.stdout and "TTS Auto: 'Hello there.'" in done.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--video", "missing file.mp4", "--text", "hi"], "missing file.mp4: no such file"),
        (["--video", "{clip}", "--text", "   "], "empty"),
        (["--video", "{clip}", "--text", "hi", "--speaker", "Emilie"], "did you mean Emily"),
        (["--video", "{clip}", "--text", "hi", "--sync-mode", "stretch"], "unknown --sync-mode"),
        (["--video", "{clip}", "--text", "hi", "--start", "abc"], "--start must be a number"),
        (
            ["--video", "{clip}", "--audio", "{voice}", "--loudness", "+3"],
            "loudness target must be between -70 and 0 LUFS",
        ),
        (["--video", "{clip}", "--text", "hi", "--provider", "nope"], "unknown provider"),
        (["--video", "{clip}", "--text-file", "nothing.txt"], "nothing.txt: no such file"),
        (["--video", "{clip}", "--text-file", "{blank}"], "blank.txt: the script is empty"),
        (["--video", "{junk}", "--text", "hi"], "junk.mp4"),
        (["--video", "{voice}", "--text", "hi"], "audio-only"),
        (["--video", "{clip}", "--audio", "{silence}"], "silence.wav: the audio is silent"),
        (["--text", "hi"], "--video and --out are required"),
    ],
)
def test_bad_input_is_one_line_on_stderr_exit_6_and_no_media_left(clip, tmp_path, args, fragment):
    (tmp_path / "junk.mp4").write_text("plain text, renamed")
    voice = make_audio(tmp_path / "voice.mp3", seconds=1)
    silence = make_audio(tmp_path / "silence.wav", seconds=1, speech=False, level_db=-200)
    (tmp_path / "blank.txt").write_text(" \n\n ")
    subst = {
        "{blank}": tmp_path / "blank.txt",
        "{clip}": clip,
        "{junk}": tmp_path / "junk.mp4",
        "{voice}": voice,
        "{silence}": silence,
    }
    argv = [subst.get(a, a) for a in args]
    out = tmp_path / "out"
    if "--video" in args:  # the last case leaves out --video, and --out with it
        argv += ["--out", out]
    done = lipsync("prepare", *argv, cwd=tmp_path)
    assert done.returncode == 6, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], done.stderr
    assert done.stdout == ""
    assert not out.exists() or not [p for p in out.iterdir() if p.suffix in (".mp4", ".wav", ".mp3")]


def test_json_errors_are_a_json_document_too(tmp_path):
    done = lipsync(
        "prepare", "--video", tmp_path / "none.mp4", "--text", "hi", "--out", tmp_path, "--json", cwd=tmp_path
    )
    assert done.returncode == 6
    doc = json.loads(done.stdout)
    assert doc["ok"] is False and doc["error"]["exit_code"] == 6 and "none.mp4" in doc["error"]["message"]
