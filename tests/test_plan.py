"""`lipsync plan` (segments, ranges, cut reasons, calls, estimated cost; nothing written, nothing created)
and `lipsync run --budget` (refused before any create)."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest
from runkit import LONG_SCRIPT, lipsync, make_batch_media, write_batch

from pipeline.emulator import Emulator, EmulatorSettings


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_batch_media(tmp_path_factory.mktemp("media"))


def _fal_cost(seconds: float, characters: int) -> Decimal:
    """fal's documented price, worked out here: $0.04 per output second, $0.24 per 100 characters spoken."""
    return Decimal("0.04") * math.ceil(seconds) + Decimal("0.24") * math.ceil(characters / 100)


def test_plan_lists_segments_calls_and_cost_without_writing_anything(tmp_path, media):
    config = write_batch(
        tmp_path,
        media,
        [
            {"id": "spoken", "video": "clip.mp4", "text_file": "script.txt"},
            {"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"},
        ],
        provider="fal",
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    run = lipsync("plan", str(config), "--json")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output folder, no media
    doc = json.loads(run.stdout)
    jobs = {job["id"]: job for job in doc["jobs"]}

    spoken = jobs["spoken"]
    assert spoken["voice"] == "script" and spoken["creates"] == len(spoken["segments"]) >= 2
    assert sum(s["tts_characters"] for s in spoken["segments"]) <= len(LONG_SCRIPT)
    assert sum(s["tts_characters"] for s in spoken["segments"]) > 0.9 * len(LONG_SCRIPT)
    starts = [s["start"] for s in spoken["segments"]]
    assert starts[0] == 0 and starts == sorted(starts) and spoken["segments"][-1]["end"] == pytest.approx(2.0, abs=0.05)
    assert all(s["cut_reason"] for s in spoken["segments"])
    assert Decimal(spoken["estimate"]["total"]) == sum(
        _fal_cost(s["seconds"], s["tts_characters"]) for s in spoken["segments"]
    )

    voiced = jobs["voiced"]
    assert voiced["voice"] == "audio" and voiced["creates"] == 1
    (only,) = voiced["segments"]
    assert only["start"] == 0 and only["end"] == pytest.approx(2.0, abs=0.05) and only["tts_characters"] == 0
    assert Decimal(voiced["estimate"]["total"]) == _fal_cost(only["seconds"], 0)
    assert Decimal(doc["total"]) == Decimal(spoken["estimate"]["total"]) + Decimal(voiced["estimate"]["total"])
    assert doc["creates"] == spoken["creates"] + 1

    text = lipsync("plan", str(config))
    assert text.returncode == 0 and "spoken: " in text.stdout and f"USD {Decimal(doc['total']):.2f}" in text.stdout
    assert all(f"  why: {reason}" in text.stdout for job in doc["jobs"] for reason in job["reasons"])


def test_plan_says_unknown_where_no_price_is_documented_and_flags_too_many_creates(tmp_path, media):
    config = write_batch(
        tmp_path, media, [{"id": "spoken", "video": "clip.mp4", "text_file": "script.txt"}], provider="pixverse"
    )
    config.write_text(config.read_text().replace("max_jobs = 4\n", "max_jobs = 4\nmax_creates_per_job = 1\n"))
    doc = json.loads(lipsync("plan", str(config), "--json").stdout)
    job = doc["jobs"][0]
    assert doc["total"] == "unknown" and job["estimate"]["total"] == "unknown"
    assert all(line["amount"] == "unknown" for line in job["estimate"]["lines"])
    assert "max_creates_per_job = 1" in job["refusal"]


@pytest.mark.parametrize(
    "provider, budget, named",
    [
        ("fal", "0.05", "USD 0.08"),  # over: one 2 s job at $0.04 a second
        ("pixverse", "100", "unknown"),  # no documented price: a budget cannot be kept
    ],
)
def test_budget_refuses_before_any_create(tmp_path, media, provider, budget, named):
    with Emulator(EmulatorSettings(latency_s=0.3)) as emu:
        config = write_batch(
            tmp_path,
            media,
            [{"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"}],
            provider=provider,
            base_urls=emu.base_urls,
        )
        run = lipsync("run", str(config), "--budget", budget, env=emu.env())
        assert emu.accepted_creates(provider) == 0
    assert run.returncode == 4, run.stderr
    assert named in run.stderr and "refused before any provider job was created" in run.stderr
    assert not (tmp_path / "out").exists()


def test_a_budget_over_the_estimate_runs(tmp_path, media):
    with Emulator(EmulatorSettings(latency_s=0.3)) as emu:
        config = write_batch(
            tmp_path,
            media,
            [{"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"}],
            provider="fal",
            base_urls=emu.base_urls,
        )
        run = lipsync("run", str(config), "--budget", "0.08", "--json", env=emu.env())
        assert emu.accepted_creates("fal") == 1
    assert run.returncode == 0, run.stderr


def test_a_config_sets_a_price_the_provider_does_not_document(tmp_path, media):
    config = write_batch(
        tmp_path, media, [{"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"}], provider="pixverse"
    )
    config.write_text(config.read_text() + '\n[prices.pixverse]\ncurrency = "USD"\nper_output_second = 0.05\n')
    doc = json.loads(lipsync("plan", str(config), "--json").stdout)
    assert (
        doc["total"] == "0.10"
        and "the config (currency, per_output_second)" in doc["jobs"][0]["estimate"]["reasons"][0]
    )
    config.write_text(config.read_text().replace("per_output_second = 0.05", "per_output_second = -1"))
    refused = lipsync("plan", str(config), "--json")
    assert refused.returncode == 6 and str(config) in refused.stderr and "per_output_second" in refused.stderr
