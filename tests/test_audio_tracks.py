"""Which audio track is the voice: the one asked for, the one flagged default, else the one with the most speech.

The media tests hear the delivered voice: it must correlate with the source of the chosen track and not with
the others (a music bed, room tone)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from audio_timing_media import voice_offset
from hypothesis import given
from hypothesis import strategies as st
from loudness import voice_layout
from media import Track, make_audio, make_multitrack, make_music

from pipeline.errors import InputError
from pipeline.prepare import PrepareRequest, prepare
from pipeline.run.config import load_config
from pipeline.run.steps import prepare_job
from pipeline.stages.audio_tracks import SPEECH_GAP, choose_audio_track
from pipeline.stages.probe import AudioStream, MediaProbe, probe

SECONDS = 3.0


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracks")
    return {
        "dialogue": make_audio(root / "dialogue.wav", seconds=SECONDS, seed=7),
        "music": make_music(root / "music.wav", SECONDS),
        "room tone": make_audio(root / "room tone.wav", seconds=SECONDS, speech=False, level_db=-75),
    }


def heard(delivered: Path, sounds: dict[str, Path]) -> dict[str, float]:
    """How well each source sound matches the delivered voice (normalized correlation, 1 = the same sound)."""
    return {name: voice_offset(src, delivered, max_lag_s=0.1)[1] for name, src in sounds.items()}


def prepared_voice(src: Path, out: Path, **request) -> tuple[Path, dict]:
    result = prepare(PrepareRequest(video=src, **request), out)
    return result.segments[0].audio, result.to_dict()["audios"][0]["plan"]


@pytest.mark.parametrize("suffix", [".mkv", ".mov"])
def test_the_dialogue_flagged_default_is_the_voice_not_the_music_before_it(tmp_path, sounds, suffix):
    src = make_multitrack(
        tmp_path / f"interview{suffix}",
        [Track(sounds["music"], "eng", "Music"), Track(sounds["dialogue"], "eng", "Dialogue", default=True)],
    )
    voice, plan = prepared_voice(src, tmp_path / "out")
    match = heard(voice, sounds)
    assert match["dialogue"] > 0.8 and match["music"] < 0.3, match
    assert (plan["track"]["number"], plan["track"]["rule"]) == (2, "default")
    assert 'audio track 2 (en, "Dialogue")' in plan["reasons"][0]
    json.dumps(plan)  # the plan goes into the manifest as it is


def test_a_named_track_wins_over_the_default_flag(tmp_path, sounds):
    src = make_multitrack(
        tmp_path / "two.mkv",
        [Track(sounds["music"], title="Music"), Track(sounds["dialogue"], title="Dialogue", default=True)],
    )
    voice, plan = prepared_voice(src, tmp_path / "out", audio_track=1)
    match = heard(voice, sounds)
    assert match["music"] > 0.8 and match["dialogue"] < 0.3, match
    assert (plan["track"]["number"], plan["track"]["rule"]) == (1, "asked")


def test_without_a_default_flag_the_track_with_the_most_speech_is_the_voice(tmp_path, sounds):
    src = make_multitrack(
        tmp_path / "camera.mkv", [Track(sounds["room tone"], title="Scratch"), Track(sounds["dialogue"], title="Lav")]
    )
    assert [a.default for a in probe(src).audio_streams] == [False, False]  # the case this test is about
    voice, plan = prepared_voice(src, tmp_path / "out")
    assert heard(voice, sounds)["dialogue"] > 0.8
    assert (plan["track"]["number"], plan["track"]["rule"]) == (2, "most speech")
    shares = plan["track"]["speech_shares"]
    assert shares[1] > 0.5 and shares[0] < 0.1


def test_a_default_track_that_barely_speaks_is_used_with_a_warning(tmp_path, sounds):
    a_word = voice_layout(tmp_path / "a word.wav", [("speech", 0.5), ("silence", SECONDS - 0.5)])
    src = make_multitrack(tmp_path / "wrong flag.mkv", [Track(a_word, default=True), Track(sounds["dialogue"])])
    result = prepare(PrepareRequest(video=src), tmp_path / "out")
    assert result.audios[0].plan.track.number == 1
    assert any("--audio-track 2" in w for w in result.warnings), result.warnings


def test_a_track_the_file_does_not_have_is_refused_in_one_line(tmp_path, sounds):
    src = make_multitrack(tmp_path / "two tracks.mov", [Track(sounds["music"]), Track(sounds["dialogue"])])
    with pytest.raises(InputError, match=r"two tracks.mov: has 2 audio tracks: there is no audio track 3") as err:
        prepare(PrepareRequest(video=src, audio_track=3), tmp_path / "out")
    assert err.value.exit_code == 6
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_lipsync_probe_lists_every_track_and_marks_the_voice(tmp_path, sounds):
    src = make_multitrack(
        tmp_path / "three.mkv",
        [
            Track(sounds["music"], "eng", "M&E"),
            Track(sounds["dialogue"], "fra", "Dialogue", default=True),
            Track(sounds["room tone"], "deu"),
        ],
    )
    lipsync = str(Path(sys.executable).with_name("lipsync"))
    out = subprocess.run([lipsync, "probe", str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip().startswith("audio")]
    assert len(lines) == 3
    assert "track 1" in lines[0] and "en" in lines[0] and '"M&E"' in lines[0] and "not default" in lines[0]
    assert "speech 0%" in lines[2]
    assert [("<- voice" in line) for line in lines] == [False, True, False]
    assert "default" in lines[1] and '"Dialogue"' in lines[1]
    doc = json.loads(subprocess.run([lipsync, "probe", "--json", str(src)], capture_output=True, text=True).stdout)
    voice = doc["files"][0]["voice_track"]
    assert (voice["number"], voice["rule"]) == (2, "default") and len(voice["speech_shares"]) == 3


def test_audio_track_in_a_config_reaches_the_job_and_only_then_its_key(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "voice.mov").write_bytes(b"x")
    body = (
        '[run]\nname = "t"\nprovider = "fal"\n[defaults]\naudio_track = 2\n'
        '[[job]]\nid = "a"\nvideo = "clip.mp4"\naudio = "voice.mov"\n'
        '[[job]]\nid = "b"\nvideo = "clip.mp4"\naudio = "voice.mov"\naudio_track = 1\n'
    )
    (tmp_path / "run.toml").write_text(body, encoding="utf-8")
    a, b = load_config(tmp_path / "run.toml").jobs
    assert (a.audio_track, b.audio_track) == (2, 1)
    assert a.params()["audio_track"] == 2
    assert "audio_track" not in replace(a, audio_track=None).params()  # keys of jobs without it are unchanged


# ---- the decision (pure) ------------------------------------------------------------------------------------

tracks = st.lists(st.tuples(st.booleans(), st.floats(0, 1)), min_size=1, max_size=6)


def fake_probe(flags: list[bool]) -> MediaProbe:
    streams = tuple(AudioStream("AAC", 2, 48000, 3.0, None, index=i, default=d) for i, d in enumerate(flags))
    return MediaProbe(Path("take.mkv"), "mkv", 3.0, 1000, None, streams[0], audio_streams=streams)


@given(tracks, st.booleans(), st.data())
def test_the_choice_follows_asked_then_the_one_default_then_the_most_speech(spec, measured, data):
    flags, shares = [d for d, _ in spec], [s for _, s in spec]
    p = fake_probe(flags)
    asked = data.draw(st.none() | st.integers(1, len(spec)))
    choice = choose_audio_track(p, asked, shares if measured else None)
    assert choice.reason and choice.number == choice.index + 1
    if asked is not None:
        assert (choice.number, choice.rule) == (asked, "asked")
    elif len(spec) == 1:
        assert (choice.index, choice.rule) == (0, "only")
    elif flags.count(True) == 1:
        assert (choice.index, choice.rule) == (flags.index(True), "default")
        assert (choice.warning is not None) == (measured and max(shares) - shares[choice.index] >= SPEECH_GAP)
    elif measured:
        assert choice.rule == "most speech" and shares[choice.index] == max(shares)
    else:
        assert (choice.index, choice.rule) == (0, "first")


@given(st.integers(1, 5), st.integers(-3, 12))
def test_a_track_number_out_of_range_is_an_input_error(count, asked):
    p = fake_probe([False] * count)
    if 1 <= asked <= count:
        assert choose_audio_track(p, asked).number == asked
    else:
        with pytest.raises(InputError, match=f"there is no audio track {asked}"):
            choose_audio_track(p, asked)


def test_prepare_cli_takes_the_track_asked_for_and_refuses_a_word(tmp_path, sounds):
    src = make_multitrack(tmp_path / "two.mov", [Track(sounds["music"]), Track(sounds["dialogue"], default=True)])
    lipsync = str(Path(sys.executable).with_name("lipsync"))
    out = subprocess.run(
        [lipsync, "prepare", "--video", str(src), "--audio-track", "1", "--out", str(tmp_path / "out"), "--json"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["audios"][0]["plan"]["track"]["rule"] == "asked"
    assert heard(tmp_path / "out" / "seg000.wav", sounds)["music"] > 0.8
    bad = subprocess.run(
        [lipsync, "prepare", "--video", str(src), "--audio-track", "two", "--out", str(tmp_path / "bad")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 6 and "--audio-track must be a number" in bad.stderr


def test_a_batch_job_s_audio_track_picks_the_voice_in_its_audio_file(tmp_path, sounds):
    make_multitrack(tmp_path / "voice.mov", [Track(sounds["dialogue"], default=True), Track(sounds["music"])])
    make_multitrack(tmp_path / "clip.mp4", [Track(sounds["room tone"])])
    (tmp_path / "run.toml").write_text(
        '[run]\nname = "t"\nprovider = "fal"\n'
        '[[job]]\nid = "a"\nvideo = "clip.mp4"\naudio = "voice.mov"\naudio_track = 2\n',
        encoding="utf-8",
    )
    (spec,) = load_config(tmp_path / "run.toml").jobs
    job = prepare_job(spec, "key", tmp_path / "work", lambda fraction: None)
    assert heard(job.segments[0].audio, sounds)["music"] > 0.8
    assert job.report.audios[0]["plan"]["track"]["number"] == 2
