"""Config loading: defaults, relative paths, and errors that name the file and the key (exit 6)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.run.config import load_config


def write_config(tmp_path: Path, body: str, name: str = "batch.toml") -> Path:
    (tmp_path / "media").mkdir(exist_ok=True)
    for f in ("clip.mp4", "voice.wav"):
        (tmp_path / "media" / f).write_bytes(b"x")
    (tmp_path / "media" / "script.txt").write_text("Hello there. This is a script.\n", encoding="utf-8")
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


GOOD = """
[run]
name = "weekly"
provider = "fal"
max_jobs = 3

[defaults]
speaker = "emily"
loudness_lufs = -18
limits = { video_max_seconds = 20 }

[[job]]
id = "a"
video = "media/clip.mp4"
audio = "media/voice.wav"

[[job]]
id = "b"
video = "media/clip.mp4"
text_file = "media/script.txt"
provider = "useapi"
speaker = "James"
start = 1.0
end = 5.5
limits = { video_max_seconds = 10 }
"""


def test_good_config_resolves_defaults_and_relative_paths(tmp_path):
    cfg = load_config(write_config(tmp_path, GOOD))
    a, b = cfg.jobs
    assert cfg.output == (tmp_path / "out" / "weekly").resolve()
    assert cfg.max_jobs == 3
    assert a.video == (tmp_path / "media" / "clip.mp4").resolve()
    assert a.provider == "fal" and a.speaker == "Emily" and a.loudness_lufs == -18 and a.true_peak_dbtp == -1.5
    assert a.limits.video_max_seconds == 20
    assert b.provider == "useapi" and b.speaker == "James"
    assert b.text.startswith("Hello there") and b.audio is None
    assert b.limits.video_max_seconds == 10 and (b.start, b.end) == (1.0, 5.5)
    assert cfg.providers == ("fal", "useapi")


def test_one_fal_base_url_serves_both_fal_hosts(tmp_path):
    cfg = load_config(
        write_config(
            tmp_path, GOOD.replace("max_jobs = 3", 'max_jobs = 3\nbase_urls = { fal = "http://127.0.0.1:8/fal" }')
        )
    )
    assert cfg.base_urls == {"fal_queue": "http://127.0.0.1:8/fal", "fal_storage": "http://127.0.0.1:8/fal"}


def test_config_from_another_working_directory(tmp_path, monkeypatch):
    path = write_config(tmp_path, GOOD)
    monkeypatch.chdir("/")
    assert load_config(path).jobs[0].audio == (tmp_path / "media" / "voice.wav").resolve()


@pytest.mark.parametrize(
    "old, new, key, hint",
    [
        ('provider = "fal"', 'provider = "runway"', "run.provider", "choose one of"),
        ("max_jobs = 3", "max_jobs = 0", "run.max_jobs", "greater than or equal to 1"),
        ("loudness_lufs = -18", "loudness_lufs = 0", "defaults.loudness_lufs", "less than 0"),
        ("max_jobs = 3", "max_jobs = 3\ncolour = 1", "run.colour", "unknown key"),
        ('audio = "media/voice.wav"', 'audio = "media/nope.wav"', "job[0].audio", "no such file"),
        ('audio = "media/voice.wav"', 'audio = "media/voice.wav"\ntext = "hi"', "job[0]", "at most one of"),
        ('speaker = "James"', 'speaker = "Jamse"', "job[1].speaker", "did you mean James"),
        ("end = 5.5", "end = 0.5", "job[1]", "must be after start"),
        ('id = "b"', 'id = "a"', "job", "used twice"),
        ('id = "b"', 'id = "../evil"', "job[1].id", "pattern"),
        (
            "limits = { video_max_seconds = 10 }",
            "limits = { video_max_seconds = -1 }",
            "job[1].limits",
            "greater than 0",
        ),
        ('name = "weekly"\n', "", "run.name", "missing"),
        ("max_jobs = 3", 'max_jobs = 3\nbase_urls = { runway = "http://x" }', "run.base_urls", "unknown base URL key"),
        ("max_jobs = 3", 'max_jobs = 3\nbase_urls = { fal = "ftp://x" }', "run.base_urls", "not an http(s) URL"),
    ],
)
def test_bad_config_names_file_key_and_fix(tmp_path, old, new, key, hint):
    assert old in GOOD
    path = write_config(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.exit_code == 6
    assert str(path) in str(err.value)
    assert f"{key}" in str(err.value) and hint in str(err.value)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="lipsync init"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nname=", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_only_selects_and_rejects_unknown_ids(tmp_path):
    cfg = load_config(write_config(tmp_path, GOOD))
    assert [j.id for j in cfg.select(("b",))] == ["b"]
    with pytest.raises(ConfigError, match="zzz"):
        cfg.select(("zzz",))


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["name", "provider", "max_jobs", "output", "bogus"]),
        st.one_of(st.integers(-3, 100), st.text(max_size=8), st.booleans()),
        max_size=5,
    )
)
def test_arbitrary_run_sections_either_load_or_raise_config_error(tmp_path_factory, run):
    tmp = tmp_path_factory.mktemp("fuzz")
    lines = "\n".join(f"{k} = {_toml_value(v)}" for k, v in run.items())
    path = write_config(tmp, f"[run]\n{lines}\n\n[[job]]\nid='a'\nvideo='media/clip.mp4'\naudio='media/voice.wav'\n")
    try:
        cfg = load_config(path)
    except ConfigError as err:
        assert str(path) in str(err)
    else:
        assert cfg.provider in ("pixverse", "aimlapi", "useapi", "fal")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)  # a JSON string or integer is also a TOML one


def test_a_script_file_saved_with_a_bom_is_read_without_it(tmp_path):
    """Notepad and Excel save UTF-8 with a byte-order mark; U+FEFF must not reach the provider's TTS."""
    path = write_config(tmp_path, GOOD)
    (tmp_path / "media" / "script.txt").write_bytes("\ufeffHello there. This is a script.\n".encode("utf-8"))
    b = load_config(path).jobs[1]
    assert b.text == "Hello there. This is a script.\n"
