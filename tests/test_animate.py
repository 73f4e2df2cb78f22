"""Talking portraits end to end: `lipsync animate` and image jobs in `lipsync run`, as subprocesses over real HTTP
against the emulator's `pixverse/v5/image-to-video`; results measured independently (pymediainfo, ffmpeg decodes)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from image_media import animated_gif, exif_rotated_jpeg, marked_portrait
from media import media_info
from provider_kit import recording_client

from pipeline.emulator import Emulator, EmulatorSettings
from pipeline.errors import ValidationError
from pipeline.ffmpeg import ffmpeg_exe
from pipeline.providers import get_provider
from pipeline.providers.aimlapi import ImageJobRequest
from pipeline.providers.sqlite_store import SqliteStore
from pipeline.providers.store import CreateState
from pipeline.speech import estimate_speech_seconds
from pipeline.submit import submit, submit_job, submit_ledger_path

LIPSYNC = str(Path(sys.executable).with_name("lipsync"))
PROMPT = "A presenter facing the camera, calm, studio light."
LINE = "Hello and welcome. Here are the headlines."
FPS = 24  # the emulator's portrait frame rate


@pytest.fixture(scope="module")
def emu():
    with Emulator(EmulatorSettings(latency_s=0.2, queue_s=0.0)) as e:
        yield e


@pytest.fixture(autouse=True)
def clean_faults(emu):
    emu.faults("aimlapi").clear()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A phone photo: stored on its side, upright through its EXIF orientation (shown 480x640, portrait)."""
    return exif_rotated_jpeg(tmp_path_factory.mktemp("photo") / "presenter.jpg")


def lipsync(emu, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **emu.env(), "LIPSYNC_POLL_INTERVAL": "0.05", **(env_extra or {})}
    return subprocess.run([LIPSYNC, *args], capture_output=True, text=True, env=env, timeout=300)


def animate_args(image: Path, out: Path, *extra: str) -> list[str]:
    return [
        "animate",
        "--image",
        str(image),
        "--prompt",
        PROMPT,
        "--speaker",
        "Ava",
        "--resolution",
        "360p",
        "--poll-interval",
        "0.05",
        "--out",
        str(out),
        *extra,
    ]


def small_gray_frames(path: Path, width: int = 90, height: int = 120) -> np.ndarray:
    """Every frame of `path`, decoded by ffmpeg directly, scaled down to grey `width`x`height` pixels."""
    argv = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-vf",
        f"scale={width}:{height}",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "gray",
        "-",
    ]
    raw = subprocess.run(argv, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width).astype(float)


def test_animate_end_to_end_then_a_rerun_reuses_the_paid_job(emu, photo, tmp_path):
    out = tmp_path / "portrait.mp4"
    before = emu.accepted_creates("aimlapi")
    run = lipsync(emu, *animate_args(photo, out, "--text", LINE, "--json"))
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["ok"] and emu.accepted_creates("aimlapi") == before + 1
    [job_id] = doc["job_ids"]
    assert job_id.endswith(":pixverse/v5/image-to-video") and f"{job_id} created" in run.stderr
    assert doc["jobs"][0]["usage"] == {"tokens_used": 420000.0}  # as the reply names it
    assert doc["plan"]["durations"] == [5] and "fits a 5 s clip" in doc["plan"]["script"][0]
    assert any("EXIF" in reason for reason in doc["plan"]["image"])
    assert doc["verification"]["ok"] and doc["verification"]["figures"]["first_frame_ssim"] > 0.9
    assert doc["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    tracks = media_info(out)
    video, audio = tracks["Video"][0], tracks["Audio"][0]
    assert (int(video.width), int(video.height)) == (360, 480)  # the portrait photo stays portrait
    assert abs(float(video.duration) / 1000 - 5.0) < 0.1 and float(audio.duration) > 4000

    again = lipsync(emu, *animate_args(photo, out, "--text", LINE, "--json"))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["jobs"][0]["started_with"] == "reuse"
    assert emu.accepted_creates("aimlapi") == before + 1


def test_a_script_too_long_for_one_clip_is_refused_with_the_estimate_and_the_fix(emu, photo, tmp_path):
    out = tmp_path / "long.mp4"
    script = "We open with the markets, which rose again this morning on strong results. " * 2
    run = lipsync(emu, *animate_args(photo, out, "--text", script, "--duration", "5"))
    assert run.returncode == 6
    assert "s to speak; a 5 s clip at 360p holds" in run.stderr and "--chain" in run.stderr
    assert "--duration 8" in run.stderr
    assert list(tmp_path.iterdir()) == []  # nothing paid, nothing written


def _write_bad_image(path: Path, kind: str) -> Path:
    if kind == "animated gif":
        return animated_gif(path.with_suffix(".gif"))
    if kind in ("1x1", "too small"):
        marked_portrait(*((1, 1) if kind == "1x1" else (150, 200))).save(path, "JPEG")
    else:
        path.write_bytes(b"" if kind == "zero bytes" else b"this is a text file, not a picture")
    return path


@pytest.mark.parametrize("kind", ["zero bytes", "text renamed .jpg", "animated gif", "1x1", "too small"])
def test_a_bad_image_is_exit_6_naming_it_and_leaves_nothing(emu, tmp_path, kind):
    bad = _write_bad_image(tmp_path / "face.jpg", kind)
    out = tmp_path / "out" / "portrait.mp4"
    out.parent.mkdir()
    before = emu.accepted_creates("aimlapi")
    run = lipsync(emu, *animate_args(bad, out, "--text", LINE))
    assert run.returncode == 6 and str(bad) in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert list(out.parent.iterdir()) == [] and emu.accepted_creates("aimlapi") == before


def test_a_chain_over_max_clips_is_refused_before_any_create(emu, photo, tmp_path):
    script = "We open with the markets, which rose again this morning on strong results. " * 6
    before = emu.accepted_creates("aimlapi")
    run = lipsync(emu, *animate_args(photo, tmp_path / "p.mp4", "--text", script, "--chain", "--max-clips", "2"))
    assert run.returncode == 6 and "clips" in run.stderr and "over --max-clips 2" in run.stderr
    assert list(tmp_path.iterdir()) == [] and emu.accepted_creates("aimlapi") == before


def test_a_script_file_that_is_not_a_regular_file_is_refused(emu, photo, tmp_path):
    run = lipsync(emu, *animate_args(photo, tmp_path / "p.mp4", "--text-file", "/dev/zero"))
    assert run.returncode == 6 and "/dev/zero" in run.stderr
    assert list(tmp_path.iterdir()) == []


class UncheckedImageRequest(ImageJobRequest):
    """A request that skips our own checks, as a client without them would send it: the API is the judge."""

    def checked(self, limits=None) -> ImageJobRequest:
        return self


def _text_as_jpeg() -> str:
    return "data:image/jpeg;base64," + base64.b64encode(b"this is not a picture at all").decode()


REJECTIONS = {  # ImageJobRequest fields -> the emulator's words (its rules: tests/test_emulator_portrait.py)
    "empty prompt": ({"prompt": "  "}, "prompt is required"),
    "bad resolution": ({"resolution": "4k"}, "resolution must be one of 360p, 540p, 720p, 1080p"),
    "bad duration": ({"duration": 6}, "duration must be one of 5, 8"),
    "duration as text": ({"duration": "5"}, "duration must be one of 5, 8, got '5'"),
    "1080p for 8 s": ({"resolution": "1080p", "duration": 8}, "1080p quality option does not support 8-second"),
    "bad style": ({"style": "noir"}, "style must be one of anime, 3d_animation, clay, comic, cyberpunk"),
    "fractional seed": ({"seed": 1.5}, "seed must be an integer"),
    "seed as text": ({"seed": "42"}, "seed must be an integer"),
    "negative seed": ({"seed": -1}, "seed must be between 0 and"),
    "text without speaker": ({"text": "Hello.", "speaker": None}, "go together"),
    "speaker without text": ({"text": None, "speaker": "Chloe"}, "go together"),
    "unknown speaker": ({"text": "Hi.", "speaker": "Bob"}, "lip_sync_tts_speaker must be"),
    "long text": ({"text": "a" * 201, "speaker": "Ava"}, "1..200 characters"),
    "text bytes as jpeg": ({"image_url": _text_as_jpeg()}, "does not hold a JPEG, PNG or WebP image"),
    "plain http url": ({"image_url": "http://example.com/a.jpg"}, "must be an https URL or a data URI"),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_each_emulator_rejection_is_exit_6_with_the_apis_message_and_recorded_refused(emu, tmp_path, case):
    fields, message = REJECTIONS[case]
    image = tmp_path / "face.jpg"
    marked_portrait(360, 480).save(image, "JPEG", quality=90)
    request = UncheckedImageRequest(**{"image": image, "prompt": PROMPT, "text": LINE, "speaker": "Ava", **fields})
    before = emu.accepted_creates("aimlapi")
    out = tmp_path / "portrait.mp4"
    with get_provider("aimlapi", credential=emu.credentials()["aimlapi"], base_urls=emu.base_urls) as provider:
        with pytest.raises(ValidationError) as caught:
            submit(provider, request, out)
        key = submit_job(provider, request, out).key
    assert caught.value.exit_code == 6 and message in caught.value.message
    assert emu.accepted_creates("aimlapi") == before and not out.exists()
    with SqliteStore(submit_ledger_path(out)) as store:
        record = store.latest_create(key)
    assert record is not None and record.state is CreateState.REFUSED and message in (record.error or "")


@pytest.mark.parametrize("name", ["pixverse", "useapi", "fal"])
def test_other_providers_refuse_an_image_job_before_anything_is_sent(tmp_path, name):
    image = tmp_path / "face.jpg"
    marked_portrait(360, 480).save(image, "JPEG")
    with get_provider(name, credential="unused", base_urls={}) as provider:
        with pytest.raises(ValidationError) as caught:
            provider.submission(ImageJobRequest(image, PROMPT, LINE, "Ava").checked())
    assert caught.value.exit_code == 6 and f"{name} takes no image-to-video jobs" in caught.value.message


def test_animate_killed_after_the_create_resumes_and_pays_once(photo, tmp_path):
    with Emulator(EmulatorSettings(latency_s=0.3, queue_s=0.0)) as fresh:
        out = tmp_path / "portrait.mp4"
        args = animate_args(photo, out, "--text", LINE)
        killed = lipsync(fresh, *args, env_extra={"LIPSYNC_TEST_KILL_AT": "after_create"})
        assert killed.returncode == -9, killed.stderr
        assert not out.exists() and fresh.accepted_creates("aimlapi") == 1
        resumed = lipsync(fresh, *args, "--json")
        assert resumed.returncode == 0, resumed.stderr
        doc = json.loads(resumed.stdout)
        assert doc["jobs"][0]["started_with"] == "poll" and fresh.accepted_creates("aimlapi") == 1
        assert media_info(out)["Video"] and doc["verification"]["ok"]


def forty_second_script() -> str:
    sentences = [
        "The morning markets opened higher today.",
        "Technology shares led the gains, while energy slipped.",
        "The city council approved a new park by the river.",
        "Construction begins next spring.",
        "The weekend looks bright, with light winds and warm afternoons.",
    ]
    script = ""
    while estimate_speech_seconds(script) < 40:
        script += sentences[len(script) % len(sentences)] + " "
    return script.strip()


def test_chain_speaks_a_forty_second_script_as_one_continuous_file(emu, photo, tmp_path):
    script = tmp_path / "script.txt"
    script.write_text(forty_second_script(), encoding="utf-8")
    out = tmp_path / "news.mp4"
    run = lipsync(emu, *animate_args(photo, out, "--text-file", str(script), "--chain", "--json"))
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    durations = doc["plan"]["durations"]
    assert len(durations) >= 5 and len(set(doc["job_ids"])) == len(durations)
    tracks = media_info(out)
    assert len(tracks["Video"]) == 1 and len(tracks["Audio"]) == 1  # one file, one stream each
    assert abs(float(tracks["Video"][0].duration) / 1000 - sum(durations)) < 0.2
    frames = small_gray_frames(out)
    assert len(frames) == sum(durations) * FPS
    joins = np.cumsum(durations)[:-1] * FPS  # first frame of each next clip
    for join in joins:
        before, after = frames[join - 1], frames[join]
        assert np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.97
        jump = np.abs(before - after).mean()
        within = np.abs(frames[join - 1] - frames[join - FPS]).mean()  # the zoom over a second
        assert jump < 1.0 and jump < within, (join, jump, within)


def image_batch(folder: Path) -> Path:
    marked_portrait(480, 640).save(folder / "presenter.png")
    config = folder / "batch.toml"
    config.write_text(
        f"""
[run]
name = "portraits"
provider = "aimlapi"
output = "out"
[run.rehearse]
latency_s = 0.3

[[job]]
id = "presenter"
image = "presenter.png"
prompt = "{PROMPT}"
text = "{LINE}"
speaker = "Ava"
resolution = "360p"
""",
        encoding="utf-8",
    )
    return config


def test_a_rehearsal_run_delivers_an_image_job(tmp_path):
    config = image_batch(tmp_path)
    run = subprocess.run(
        [LIPSYNC, "run", str(config), "--rehearse", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LIPSYNC_POLL_INTERVAL": "0.05"},
    )
    assert run.returncode == 0, run.stderr
    [job] = json.loads(run.stdout)["jobs"]
    job_dir = tmp_path / "out" / "presenter"
    assert job["stage"] == "done" and sorted(p.name for p in job_dir.iterdir()) == ["final.mp4", "manifest.json"]
    manifest = json.loads((job_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"][0]["role"] == "image" and manifest["config"]["image"] == "presenter.png"
    assert manifest["conform"]["image"]["plan"]["reasons"] and manifest["conform"]["script"]["clips"][0]["fit"]
    assert [p["job_id"] for p in manifest["provider_jobs"]] == job["provider_job_ids"]
    assert manifest["provider_jobs"][0]["usage"] == {"tokens_used": 420000.0}
    assert manifest["verification"]["ok"] and manifest["verification"]["figures"]["first_frame_ssim"] > 0.9
    assert str(tmp_path) not in json.dumps(manifest["conform"])  # no paths of this machine
    video = media_info(job_dir / "final.mp4")["Video"][0]
    assert (int(video.width), int(video.height)) == (360, 480)
    checksums = (tmp_path / "out" / "checksums.sha256").read_text(encoding="utf-8")
    digest = hashlib.sha256((job_dir / "final.mp4").read_bytes()).hexdigest()
    assert f"{digest}  presenter/final.mp4" in checksums


def test_a_run_killed_after_an_image_jobs_create_resumes_with_one_create(tmp_path):
    config = image_batch(tmp_path)
    with Emulator(EmulatorSettings(latency_s=0.3, queue_s=0.0)) as fresh:
        killed = lipsync(fresh, "run", str(config), env_extra={"LIPSYNC_TEST_KILL_AT": "after_create"})
        assert killed.returncode == -9, killed.stderr
        resumed = lipsync(fresh, "run", str(config), "--json")
        assert resumed.returncode == 0, resumed.stderr
        [job] = json.loads(resumed.stdout)["jobs"]
        assert job["stage"] == "done" and fresh.accepted_creates("aimlapi") == 1
        assert media_info(tmp_path / "out" / "presenter" / "final.mp4")["Video"]


@pytest.mark.parametrize(
    "job,key",
    [
        ({"image": "p.png", "prompt": "x"}, "job[0]: an image job needs exactly one of text or text_file"),
        ({"image": "p.png", "prompt": "x", "text": "Hi.", "provider": "pixverse"}, "job[0].provider"),
        ({"image": "p.png", "text": "Hi."}, "job[0]: an image job needs a prompt"),
        ({"image": "p.png", "video": "p.png", "prompt": "x", "text": "Hi."}, "exactly one of video"),
        ({"image": "p.png", "prompt": "x", "text": "Hi.", "style": "noir"}, "job[0]: style 'noir'"),
        ({"image": "p.png", "prompt": "x", "text": "Hi.", "audio": "p.png"}, "audio go with video"),
    ],
)
def test_image_job_config_errors_name_the_key(tmp_path, job, key):
    marked_portrait(300, 400).save(tmp_path / "p.png")
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in {"id": "a", **job}.items())
    (tmp_path / "batch.toml").write_text(
        f'[run]\nname = "t"\nprovider = "aimlapi"\n\n[[job]]\n{lines}', encoding="utf-8"
    )
    run = subprocess.run(
        [LIPSYNC, "run", str(tmp_path / "batch.toml"), "--rehearse"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 6 and key in run.stderr, run.stderr


def test_the_legacy_path_and_the_id_sent_encoded(emu, tmp_path):
    """seed 003's older path, chosen by the provider option; the `<uuid>:model` id goes out percent-encoded."""
    image = tmp_path / "face.jpg"
    marked_portrait(360, 480).save(image, "JPEG", quality=90)
    client, seen = recording_client()
    with get_provider(
        "aimlapi",
        credential=emu.credentials()["aimlapi"],
        base_urls=emu.base_urls,
        client=client,
        generation_path="/v2/generate/video/pixverse/generation",
    ) as provider:
        result = submit(provider, ImageJobRequest(image, PROMPT, LINE, "Ava", resolution="360p"), tmp_path / "a.mp4")
    assert result.job_id.endswith(":pixverse/v5/image-to-video") and result.usage == {"tokens_used": 420000.0}
    api = [r for r in seen if r.url.path.startswith("/aimlapi/")]
    assert {r.url.path for r in api} == {"/aimlapi/v2/generate/video/pixverse/generation"}
    polls = [r for r in api if r.method == "GET"]
    assert polls and all(r.url.query.decode() == "generation_id=" + quote(result.job_id, safe="") for r in polls)
    assert media_info(tmp_path / "a.mp4")["Video"]


def test_a_chained_image_job_in_a_run_is_one_continuous_file(tmp_path):
    config = image_batch(tmp_path)
    script = "We open with the markets, which rose again this morning on strong results. " * 2
    text = config.read_text(encoding="utf-8").replace(f'text = "{LINE}"', f'text = "{script}"\nchain = true')
    config.write_text(text + 'background = "black"\n', encoding="utf-8")
    run = subprocess.run(
        [LIPSYNC, "run", str(config), "--rehearse", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LIPSYNC_POLL_INTERVAL": "0.05"},
    )
    assert run.returncode == 0, run.stderr
    [job] = json.loads(run.stdout)["jobs"]
    assert len(job["provider_job_ids"]) >= 2
    final = tmp_path / "out" / "presenter" / "final.mp4"
    info = media_info(final)
    assert len(info["Video"]) == 1 and len(info["Audio"]) == 1
    spoken = estimate_speech_seconds(script)
    assert float(info["General"][0].duration) / 1000 > spoken


def test_config_refusals_name_the_config_keys_not_the_flags(tmp_path):
    config = image_batch(tmp_path)
    script = "We open with the markets, which rose again this morning on strong results. " * 2
    config.write_text(
        config.read_text(encoding="utf-8").replace(f'text = "{LINE}"', f'text = "{script}"\nduration = 5'),
        encoding="utf-8",
    )
    run = subprocess.run([LIPSYNC, "plan", str(config)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 6 and "set chain = true" in run.stderr and "duration = 8" in run.stderr
    assert "--chain" not in run.stderr and "--duration" not in run.stderr


def test_a_config_background_that_is_no_colour_is_refused_naming_the_key(tmp_path):
    config = image_batch(tmp_path)
    config.write_text(config.read_text(encoding="utf-8") + 'background = "blurple"\n', encoding="utf-8")
    run = subprocess.run([LIPSYNC, "plan", str(config)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 6 and "background" in run.stderr and "blurple" in run.stderr
