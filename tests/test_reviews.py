"""Review decisions in the run's ledger, the --only-rejected selection, and which paths the review server
may serve. Pure parts under hypothesis; the ledger and manifest as real files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from runkit import checksums_hold

from pipeline.errors import ValidationError
from pipeline.report.server import run_file
from pipeline.run.ledger import Ledger, Stage
from pipeline.run.reviews import Decision, Review, Reviews, Take, plan_takes, rejected_jobs
from pipeline.run.rundir import Entry, Kind, archive_delivery, judge_run_dir, refresh_checksums
from pipeline.stages.handoff import Manifest, tool_versions, write_handoff

IDS = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True), unique=True, max_size=8)


@given(ids=IDS, data=st.data())
def test_rejected_jobs_are_exactly_the_rejected_ones_in_config_order(ids, data):
    decisions = {j: data.draw(st.sampled_from([None, *Decision])) for j in ids}
    reviews = {j: Review(j, d, "n", 0.0) for j, d in decisions.items() if d is not None}
    assert rejected_jobs(reviews, tuple(ids)) == tuple(j for j in ids if decisions[j] is Decision.REJECTED)


@given(ids=IDS, data=st.data())
def test_each_rejection_gets_one_new_take_and_a_recorded_one_is_resumed(ids, data):
    reviews, takes = {}, {}
    for j in ids:
        decision = data.draw(st.sampled_from([None, *Decision]))
        if decision is not None:
            reviews[j] = Review(j, decision, f"note {j}", data.draw(st.sampled_from([1.0, 2.0])))
        if data.draw(st.booleans()):
            takes[j] = Take(j, data.draw(st.integers(1, 5)), data.draw(st.sampled_from([1.0, 2.0])), "")
    plans = plan_takes(reviews, takes, tuple(ids))
    assert [p.take.job_id for p in plans] == list(rejected_jobs(reviews, tuple(ids)))
    for plan in plans:
        earlier = takes.get(plan.take.job_id)
        answered = earlier is not None and earlier.answers == reviews[plan.take.job_id].decided_at
        assert plan.new is not answered
        assert plan.take == earlier if answered else plan.take.take == (earlier.take if earlier else 0) + 1
        assert plan.take.answers == reviews[plan.take.job_id].decided_at


def _run_dir(tmp_path: Path) -> Path:
    """A run directory as a run leaves it: the job done in the ledger, its handoff folder, the checksums."""
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.start_job("talk", "fal", "k")
        ledger.finish_job("talk", Stage.DONE, exit_code=0)
    final = tmp_path / "final-source.mp4"
    final.write_bytes(b"video")
    manifest = Manifest(job_id="talk", created_at=1.0, inputs=[], config={}, tools=tool_versions())
    write_handoff(tmp_path / "talk", final, manifest)
    final.unlink()
    refresh_checksums(tmp_path)
    return tmp_path


def test_a_decision_lands_in_the_ledger_and_the_manifest_and_the_checksums_follow(tmp_path):
    run_dir = _run_dir(tmp_path)
    Reviews(run_dir).decide("talk", Decision.REJECTED, "  mouth lags <b>badly</b>  ")
    with sqlite3.connect(run_dir / "ledger.sqlite") as db:
        assert db.execute("SELECT decision, note FROM reviews").fetchall() == [("rejected", "mouth lags <b>badly</b>")]
    manifest = json.loads((run_dir / "talk" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["review"]["decision"] == "rejected" and manifest["job_id"] == "talk"
    assert "talk/manifest.json" in checksums_hold(run_dir)
    Reviews(run_dir).decide("talk", Decision.APPROVED)
    assert Reviews(run_dir).all()["talk"].decision is Decision.APPROVED  # the latest decision stands


def test_a_rejection_needs_a_note_and_a_folder_without_a_ledger_is_refused(tmp_path):
    run_dir = _run_dir(tmp_path / "run")
    with pytest.raises(ValidationError, match="note is required"):
        Reviews(run_dir).decide("talk", Decision.REJECTED, "   ")
    assert Reviews(run_dir).all() == {}
    with pytest.raises(ValidationError, match=r"no ledger.sqlite"):
        Reviews(tmp_path / "elsewhere")


@given(st.lists(st.sampled_from(["..", ".", "", "talk", "final.mp4", "/", "\\", "%2e", "c:", "~"]), max_size=6))
def test_run_file_never_leaves_the_run_directory(tmp_path_factory, parts):
    root = tmp_path_factory.getbasetemp() / "serve-root"
    (root / "talk").mkdir(parents=True, exist_ok=True)
    (root / "talk" / "final.mp4").write_bytes(b"x")
    found = run_file(root, "/".join(parts))
    assert found is None or (found.is_relative_to(root.resolve()) and found.is_file())


def test_run_file_refuses_a_symlink_out_of_the_run(tmp_path):
    (tmp_path / "outside.txt").write_text("secret", encoding="utf-8")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "link.txt").symlink_to(tmp_path / "outside.txt")
    (run_dir / "inside.txt").write_text("ok", encoding="utf-8")
    assert run_file(run_dir, "link.txt") is None
    assert run_file(run_dir, "inside.txt") == (run_dir / "inside.txt").resolve()


def test_a_take_is_recorded_once_and_settling_it_clears_only_the_rejection_it_answers(tmp_path):
    run_dir = _run_dir(tmp_path)
    reviews = Reviews(run_dir)
    rejection = reviews.decide("talk", Decision.REJECTED, "lips late")
    (plan,) = plan_takes(reviews.all(), reviews.takes(), ("talk",))
    reviews.start_take(plan.take)
    reviews.start_take(plan.take)  # a killed re-run records it again: still one take
    assert reviews.takes()["talk"].take == 1 and reviews.takes()["talk"].answers == rejection.decided_at
    (again,) = plan_takes(reviews.all(), reviews.takes(), ("talk",))
    assert not again.new and again.take.take == 1
    later = reviews.decide("talk", Decision.REJECTED, "still late")  # decided while take 1 was under way
    assert not reviews.settle(plan.take) and reviews.all()["talk"] == later
    Reviews(run_dir).decide("talk", Decision.REJECTED, "lips late")
    newest = Reviews(run_dir).all()["talk"]
    assert Reviews(run_dir).settle(Take("talk", 2, newest.decided_at, "lips late")) and Reviews(run_dir).all() == {}


def test_the_delivery_is_archived_whole_once_and_the_archive_is_ours(tmp_path):
    run_dir = _run_dir(tmp_path)
    job = run_dir / "talk"
    before = {p.name: p.read_bytes() for p in job.iterdir()}
    stale = run_dir / ".work" / "talk" / "take-0"  # a kill while linking left this
    stale.mkdir(parents=True)
    (stale / "final.mp4").write_bytes(b"half")
    archive = archive_delivery(run_dir, "talk", 0)
    assert archive == job / "take-0" and not stale.exists()
    assert {p.name: p.read_bytes() for p in archive.iterdir()} == before
    assert {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()} == before  # still delivered too
    assert archive_delivery(run_dir, "talk", 0) is None  # there already: left as it is
    assert archive_delivery(run_dir, "nothing-here", 0) is None
    entries = [Entry("talk", Kind.DIR), Entry("talk/take-0", Kind.DIR), Entry("talk/take-x", Kind.DIR)]
    assert judge_run_dir(entries, ["talk"], marked=True).foreign == ("talk/take-x",)
