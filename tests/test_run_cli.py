"""`lipsync init` and `lipsync status` through the real CLI entry point."""

from __future__ import annotations

import json
import tomllib

from click.testing import CliRunner

from pipeline.cli import main
from pipeline.providers.store import SegmentRef
from pipeline.run.config import load_config
from pipeline.run.ledger import Ledger, Stage


def test_init_writes_a_starter_that_runs_the_bundled_samples_as_written_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "batch.toml"
    result = CliRunner().invoke(main, ["init", str(target)])
    assert result.exit_code == 0, result.output
    assert f"lipsync run {target} --rehearse" in result.output
    text = target.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    assert "#" in text and raw["run"]["provider"] in ("pixverse", "aimlapi", "useapi", "fal")
    cfg = load_config(target)  # every file it names exists
    assert [j.id for j in cfg.jobs] == [j["id"] for j in raw["job"]]
    assert all(j.video.is_file() and j.video.parent.name == "samples" for j in cfg.jobs)
    again = CliRunner().invoke(main, ["init", str(target)])
    assert again.exit_code == 6 and "already exists" in again.output
    assert target.read_text(encoding="utf-8") == text


def test_init_without_the_samples_says_which_files_to_provide(tmp_path, monkeypatch):
    import pipeline.cli.init as init_module

    monkeypatch.setattr(init_module, "SAMPLES", tmp_path / "no-samples-here")
    target = tmp_path / "batch.toml"
    result = CliRunner().invoke(main, ["init", str(target)])
    assert result.exit_code == 0, result.output
    assert "footage/intro.mp4" in result.output and "scripts/outro.txt" in result.output
    raw = tomllib.loads(target.read_text(encoding="utf-8"))
    assert raw["job"][0]["video"] == "footage/intro.mp4"
    run = CliRunner().invoke(main, ["run", str(target), "--rehearse"])
    assert run.exit_code == 6 and "job[0].video: no such file" in run.output and "footage/intro.mp4" in run.output
    for job in raw["job"]:  # once the files are there, the starter loads as written
        for key in ("video", "audio", "text_file"):
            if key in job:
                (tmp_path / job[key]).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / job[key]).write_text("Hello.", encoding="utf-8")
    assert [j.id for j in load_config(target).jobs] == ["intro", "outro"]


def test_status_lists_jobs_creates_and_uncertain(tmp_path):
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.start_job("done-job", "fal", "k1")
        a = ledger.record_intent("i1", SegmentRef("done-job", "k1", 0, "fal"))
        ledger.record_created("i1", a, handle={"provider": "fal", "job_id": "req-1"}, provider_job_id="req-1")
        ledger.set_stage("done-job", Stage.POLL)
        ledger.finish_job("done-job", Stage.DONE, exit_code=0, final_path=str(tmp_path / "done-job/final.mp4"))
        ledger.start_job("lost-job", "pixverse", "k2")
        ledger.record_intent("i2", SegmentRef("lost-job", "k2", 0, "pixverse"))
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


def test_status_table_has_a_header_phase_times_and_says_what_to_do(tmp_path):
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.start_job("long", "fal", "k1")
        ledger.set_stage("long", Stage.PREPARE)
        for segment in range(3):
            key = f"i{segment}"
            attempt = ledger.record_intent(key, SegmentRef("long", "k1", segment, "fal"))
            ledger.record_created(
                key, attempt, handle={"provider": "fal", "job_id": f"r{segment}"}, provider_job_id=f"r{segment}"
            )
        ledger.set_stage("long", Stage.POLL)
        ledger.start_job("short", "pixverse", "k2")
    result = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert result.exit_code == 0, result.output
    header, long_row, short_row, footer = result.stdout.splitlines()
    assert header.split()[:4] == ["job", "provider", "stage", "elapsed"] and "outcome" in header
    assert long_row.split()[:3] == ["long", "fal", "poll"] and "3 jobs, all created" in long_row
    prepare_column = header.index("prepare")
    assert long_row[prepare_column:].split()[1] == "s"  # a time was spent preparing
    assert short_row.split()[:3] == ["short", "pixverse", "pending"]
    assert footer.startswith("0/2 jobs done") and "long, short resume with `lipsync run CONFIG`" in footer


def test_an_interrupted_run_says_how_to_resume(tmp_path, monkeypatch):
    from pipeline.run import runner

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    target = tmp_path / "batch.toml"
    assert CliRunner().invoke(main, ["init", str(target)]).exit_code == 0
    monkeypatch.setattr(runner, "run_batch", interrupted)
    result = CliRunner().invoke(main, ["run", str(target), "--rehearse"])
    assert result.exit_code == 130
    assert f"run `lipsync run {target}` again to resume" in result.output
