"""`lipsync init` and `lipsync status` through the real CLI entry point."""

from __future__ import annotations

import json
import tomllib

from click.testing import CliRunner

from pipeline.cli import main
from pipeline.run.config import load_config
from pipeline.run.ledger import Ledger, Stage


def test_init_writes_a_loadable_starter_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "batch.toml"
    result = CliRunner().invoke(main, ["init", str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    assert "#" in text and raw["run"]["provider"] in ("pixverse", "aimlapi", "useapi", "fal")
    for job in raw["job"]:  # give the starter's example files so it loads as written
        for key in ("video", "audio", "text_file"):
            if key in job:
                (tmp_path / job[key]).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / job[key]).write_text("Hello.", encoding="utf-8")
    cfg = load_config(target)
    assert [j.id for j in cfg.jobs] == [j["id"] for j in raw["job"]]
    again = CliRunner().invoke(main, ["init", str(target)])
    assert again.exit_code == 6 and "already exists" in again.output
    assert target.read_text(encoding="utf-8") == text


def test_status_lists_jobs_creates_and_uncertain(tmp_path):
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.start_job("done-job", "fal", "k1")
        a = ledger.record_intent("i1", job_id="done-job", inputs_key="k1", segment=0, provider="fal")
        ledger.record_created("i1", a, handle={"provider": "fal", "job_id": "req-1"}, provider_job_id="req-1")
        ledger.set_stage("done-job", Stage.POLL)
        ledger.finish_job("done-job", Stage.DONE, exit_code=0, final_path=str(tmp_path / "done-job/final.mp4"))
        ledger.start_job("lost-job", "pixverse", "k2")
        ledger.record_intent("i2", job_id="lost-job", inputs_key="k2", segment=0, provider="pixverse")
        ledger.finish_job("lost-job", Stage.UNCERTAIN, exit_code=1, error="answer lost")
    result = CliRunner().invoke(main, ["status", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    jobs = {j["id"]: j for j in doc["jobs"]}
    assert jobs["done-job"]["stage"] == "done" and jobs["done-job"]["provider_jobs"][0]["job_id"] == "req-1"
    assert [s["stage"] for s in jobs["done-job"]["stages"]] == ["poll"]
    assert jobs["lost-job"]["stage"] == "uncertain"
    assert [u["job"] for u in doc["uncertain"]] == ["lost-job"] and doc["running"] is False
    plain = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert "req-1" in plain.output and "uncertain" in plain.output


def test_status_knows_whether_a_run_holds_the_directory(tmp_path):
    from pipeline.run.ledger import run_in_progress, run_lock

    with Ledger.in_dir(tmp_path) as ledger:
        ledger.start_job("a", "fal", "k")
    assert not run_in_progress(tmp_path)
    with run_lock(tmp_path):
        result = CliRunner().invoke(main, ["status", str(tmp_path), "--json"])
        assert json.loads(result.stdout)["running"] is True
    assert not run_in_progress(tmp_path)


def test_status_of_a_directory_without_a_ledger(tmp_path):
    result = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert result.exit_code == 6 and "ledger.sqlite" in result.output
