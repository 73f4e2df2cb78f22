"""The library face (`import pipeline`): rehearsal jobs end to end through the public functions only, on media
made here, each result read back independently (pymediainfo, sha256); typed errors; a light import."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from media import make_video, media_info
from runkit import final_file, make_batch_media, write_batch

import pipeline


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_batch_media(tmp_path_factory.mktemp("media"))


def test_a_rehearsal_job_is_delivered_through_run_config(tmp_path, media):
    config = write_batch(tmp_path, media, [{"id": "talk", "video": "clip.mp4", "audio": "voice.wav"}])

    summary = pipeline.run_config(config, rehearse=True)

    assert isinstance(summary, pipeline.RunSummary) and summary.rehearsal and summary.exit_code == 0
    (outcome,) = summary.outcomes
    assert outcome.job_id == "talk" and outcome.final == tmp_path / "out" / "talk" / "final.mp4"
    delivered = final_file(outcome.final)  # read with pymediainfo, not the pipeline's probe
    assert delivered.width > 0 and abs(delivered.video_s - 2.0) < 0.2 and abs(delivered.audio_s - 2.0) < 0.2
    assert (outcome.final.parent / "manifest.json").is_file()
    assert pipeline.verify(outcome.final, audio=media.voice).figures.video_codec is not None


def test_prepared_media_is_lip_synced_in_a_rehearsal(tmp_path, media):
    prepared = pipeline.prepare_media(media.video, out_dir=tmp_path / "prepared", audio=media.voice, provider="fal")
    (segment,) = prepared.segments
    hooked: list[str] = []

    result = pipeline.lip_sync(
        provider="fal",
        video=segment.video,
        audio=segment.audio,
        out=tmp_path / "synced.mp4",
        rehearse=True,
        hooks=pipeline.FlowHooks(on_created=lambda handle: hooked.append(handle.job_id)),
    )

    assert isinstance(result, pipeline.SubmitResult) and result.started_with == "create"
    assert hooked == [result.job_id] and result.ledger.is_file()
    assert hashlib.sha256(result.output.read_bytes()).hexdigest() == result.sha256
    tracks = media_info(result.output)
    assert tracks["Video"] and float(tracks["Video"][0].duration) / 1000 == pytest.approx(2.0, abs=0.2)


def test_probe_names_every_provider_limit(tmp_path):
    big = make_video(tmp_path / "wide.mp4", seconds=1.0, width=2560, height=1440, fps=25)

    found = pipeline.probe(big)

    assert found.probe.video is not None and found.probe.video.width == 2560
    assert set(found.violations) == {"pixverse", "aimlapi", "useapi", "fal"}
    assert any(found.violations.values())  # 2560x1440 is over at least one provider's limit
    assert set(pipeline.probe(big, provider="fal").violations) == {"fal"}


def test_errors_are_typed_with_their_exit_codes(tmp_path, media):
    with pytest.raises(pipeline.InputError) as missing:
        pipeline.probe(tmp_path / "nothing.mp4")
    assert missing.value.exit_code == 6
    with pytest.raises(pipeline.InputError):
        pipeline.verify(tmp_path / "nothing.mp4")
    with pytest.raises(pipeline.ValidationError, match="unknown sync mode"):
        pipeline.prepare_media(media.video, out_dir=tmp_path / "p", audio=media.voice, sync_mode="warp")
    with pytest.raises(pipeline.ValidationError, match="exactly one of audio or text"):
        pipeline.lip_sync(provider="fal", video=media.video, out=tmp_path / "o.mp4", rehearse=True)
    with pytest.raises(pipeline.ConfigError):
        pipeline.run_config(tmp_path / "missing.toml")
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_import_pipeline_loads_no_media_or_ml_library():
    code = (
        "import sys, pipeline; "
        "print(sorted(m for m in ('mediapipe', 'matplotlib', 'dask', 'numpy', 'pymediainfo', 'httpx', 'pydantic') "
        "if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd())
    assert run.stdout.strip() == "[]"
