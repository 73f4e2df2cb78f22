"""docs/manifest.schema.json is the schema of the manifest models as they are (`make schema` writes it), and it
says something: a manifest written by the handoff follows it, one missing a field or with a wrong type does not.
(tests/conftest.py validates every manifest the other tests write against it.)"""

from __future__ import annotations

import json

import jsonschema
import pytest
from manifest_check import ManifestWatch
from media import make_video

from pipeline.schema import SCHEMA_PATH, manifest_schema_text
from pipeline.stages.handoff import MANIFEST_NAME, InputFile, Manifest, ProviderJob, tool_versions, write_handoff


def test_the_committed_schema_is_the_generated_one():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == manifest_schema_text(), "run `make schema` and commit it"


def test_a_written_manifest_follows_the_schema_and_a_broken_one_does_not(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", seconds=1.0, width=160, height=120)
    manifest = Manifest(
        job_id="talk",
        created_at=1.0,
        inputs=[InputFile.describe("video", clip, tmp_path)],
        config={"provider": "fal"},
        provider_jobs=[ProviderJob(provider="fal", endpoint="https://queue.fal.run/x", job_id="j1", usage={"s": 1.0})],
        tools=tool_versions(),
    )
    write_handoff(tmp_path / "out" / "talk", clip, manifest)
    doc = json.loads((tmp_path / "out" / "talk" / MANIFEST_NAME).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))

    validator.validate(doc)
    assert doc["inputs"][0]["probe"]["video"]["width"] == 160 and doc["inputs"][0]["probe"]["path"] == "clip.mp4"

    for broken in (
        {k: v for k, v in doc.items() if k != "job_id"},
        {**doc, "created_at": "yesterday"},
        {**doc, "provider_jobs": [{**doc["provider_jobs"][0], "poll_count": "many"}]},
        {**doc, "inputs": [{**doc["inputs"][0], "probe": {**doc["inputs"][0]["probe"], "size_bytes": None}}]},
        {**doc, "review": {"job_id": "talk", "decision": "maybe", "note": "", "decided_at": 2.0}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(broken)


def test_the_suite_wide_watch_reports_a_manifest_off_the_schema_once(tmp_path):
    watch = ManifestWatch(tmp_path)
    job = tmp_path / "run" / "job"
    job.mkdir(parents=True)
    (job / MANIFEST_NAME).write_text(json.dumps({"job_id": 7}), encoding="utf-8")
    (tmp_path / "run" / ".work").mkdir()
    (tmp_path / "run" / ".work" / MANIFEST_NAME).write_text("scratch, never delivered", encoding="utf-8")

    problems = watch.problems()

    assert problems and all(p.startswith(str(job / MANIFEST_NAME)) for p in problems)
    assert any("job_id" in p for p in problems) and any("'tools' is a required property" in p for p in problems)
    assert watch.problems() == []  # the same version is not checked again
    (job / MANIFEST_NAME).unlink()  # the suite's own watch (conftest) would rightly report it too
