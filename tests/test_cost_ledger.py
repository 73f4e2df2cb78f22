"""Cost on record (issue 13, item 5): the ledger keeps each job's estimate (made before its creates) and what
the provider reported; `lipsync status`, the run's summary and the manifest show both."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest
from runkit import lipsync, make_batch_media, write_batch

from pipeline.emulator.aimlapi import CREDITS_PER_JOB


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_batch_media(tmp_path_factory.mktemp("media"))


def test_estimate_and_reported_cost_are_recorded_and_shown(media, tmp_path):
    jobs = [
        {"id": "at-fal", "video": "clip.mp4", "audio": "voice.wav", "provider": "fal"},
        {"id": "at-aimlapi", "video": "clip.mp4", "audio": "voice.wav", "provider": "aimlapi"},
        {"id": "script-fal", "video": "clip.mp4", "text_file": "script.txt", "provider": "fal"},
    ]
    config = write_batch(tmp_path, media, jobs)
    run = lipsync("run", str(config), "--rehearse", "--json")
    assert run.returncode == 0, run.stderr
    summary = {j["id"]: j["cost"] for j in json.loads(run.stdout)["jobs"]}

    status = lipsync("status", str(tmp_path / "out"), "--json")
    assert status.returncode == 0, status.stderr
    cost = {j["id"]: j["cost"] for j in json.loads(status.stdout)["jobs"]}
    assert cost == summary

    # fal documents its price: one whole second per started second of the 2 s clip, nothing reported back
    assert (cost["at-fal"]["estimated"], cost["at-fal"]["currency"]) == ("0.08", "USD")
    assert cost["at-fal"]["reported_credits"] is None
    # the script's TTS characters are priced per started 100, per provider job
    lines = cost["script-fal"]["segments"]
    assert len(lines) >= 2 and all(line["tts_characters"] > 0 for line in lines)
    expected = sum(
        Decimal("0.04") * math.ceil(line["seconds"]) + Decimal("0.24") * math.ceil(line["tts_characters"] / 100)
        for line in lines
    )
    assert Decimal(cost["script-fal"]["estimated"]) == expected
    # AI/ML API documents no price (unknown, never guessed) and reports usage in its replies
    assert cost["at-aimlapi"]["estimated"] == "unknown"
    assert cost["at-aimlapi"]["reported_credits"] == CREDITS_PER_JOB
    (line,) = cost["at-aimlapi"]["segments"]
    assert line["provider_job"] and line["reported_credits"] == CREDITS_PER_JOB

    table = lipsync("status", str(tmp_path / "out"))
    header, *rows = table.stdout.splitlines()
    assert "estimated" in header and "reported" in header
    by_job = {row.split()[0]: row for row in rows if row.split() and row.split()[0] in cost}
    assert "USD 0.08" in by_job["at-fal"]
    assert "unknown" in by_job["at-aimlapi"] and f"{CREDITS_PER_JOB:,} credits" in by_job["at-aimlapi"]

    manifest = json.loads((tmp_path / "out" / "at-aimlapi" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["cost"]["estimated"] == "unknown" and manifest["cost"]["reported_credits"] == CREDITS_PER_JOB
    manifest = json.loads((tmp_path / "out" / "script-fal" / "manifest.json").read_text(encoding="utf-8"))
    assert Decimal(manifest["cost"]["estimated"]) == expected
    assert [s["index"] for s in manifest["segments"]] == [line["segment"] for line in lines]
    assert all(s["provider_job"] and s["ok"] for s in manifest["segments"])
