"""The provider-job flow's rules, driven by a scripted provider (no protocol: the adapters' own tests speak
HTTP to the emulator and to docs-only peers). What is recorded after each step is read back from a real
SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
from provider_kit import tiny_media

from pipeline.errors import ProviderError, ResultPending, UncertainCreate, ValidationError
from pipeline.providers.base import JobHandle, JobRequest, JobState, JobStatus, Provider, Submission
from pipeline.providers.download import Download
from pipeline.providers.flow import FlowSettings, ProviderJobFlow, SegmentJob
from pipeline.providers.http import Accepted, CreateRequest, Lost, Refused, RetryPolicy
from pipeline.providers.poll import PollPolicy
from pipeline.providers.sqlite_store import SqliteStore
from pipeline.providers.store import CreateState, SegmentRef


class Scripted(Provider):
    """Answers creates and polls from lists; counts what a real provider would have billed."""

    name = "pixverse"
    secret_env = "PIXVERSE_API_KEY"
    base_url_defaults: ClassVar[dict[str, str]] = {"pixverse": "https://provider.example"}
    base_url_env: ClassVar[dict[str, str]] = {"pixverse": "UNUSED"}
    default_poll = PollPolicy(initial=0.01, factor=1.0, maximum=0.01, timeout=5, max_unconfirmed=3)
    limits_key = "pixverse"

    def __init__(self, creates: list, polls: list):
        super().__init__(credential="k", base_urls={}, create_retry=RetryPolicy(attempts=4, initial=0.0, maximum=0.0))
        self.creates, self.polls = list(creates), list(polls)
        self.sent = self.billed = self.uploads = 0

    def submission(self, req, *, reply_ref=None):
        self.uploads += 1
        return Submission(CreateRequest("POST", "https://provider.example/create", dict, list, 0), {"ref": reply_ref})

    def send_create(self, submission, *, after_send=lambda: None):
        self.sent += 1
        outcome = self.creates.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        self.billed += isinstance(outcome, (Accepted, Lost))
        return outcome

    def handle_from(self, body, created_at):
        return JobHandle(self.name, str(body["id"]), {}, created_at) if "id" in body else None

    def poll(self, handle):
        return self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]

    def download(self, url, dst, *, max_bytes, limits=None):
        Path(dst).write_bytes(b"result of " + url.encode())
        return Download(Path(dst), "ab" * 32, 10, "video/mp4")


DONE = JobStatus(JobState.SUCCEEDED, "1", result_url="https://cdn.example/r.mp4")
DONE_NO_URL = JobStatus(JobState.RUNNING, "1", unconfirmed=True)
RUNNING = JobStatus(JobState.RUNNING, "5")


@pytest.fixture
def setup(tmp_path):
    video, audio = tiny_media(tmp_path)
    store = SqliteStore(tmp_path / "ledger.sqlite")
    job = SegmentJob(
        "key-1", SegmentRef("job", "inputs", 0, "pixverse"), JobRequest(video, audio), "ref-1", tmp_path / "result.mp4"
    )
    yield store, job
    store.close()


def _attempts(store) -> list[str]:
    rows = store._read("SELECT state FROM creates WHERE idem_key='key-1' ORDER BY attempt")
    return [r["state"] for r in rows]


def test_refusals_are_recorded_one_by_one_and_never_make_the_key_uncertain(setup):
    store, job = setup
    provider = Scripted([Refused("500044 busy"), Refused("HTTP 429"), Accepted({"id": 7}, '{"id": 7}')], [DONE])
    result = ProviderJobFlow(provider, store).run(job)
    assert _attempts(store) == ["refused", "refused", "downloaded"]
    assert provider.uploads == 1 and provider.sent == 3 and provider.billed == 1
    assert result.record.provider_job_id == "7" and result.record.raw_reply == '{"id": 7}'


def test_a_definite_refusal_is_recorded_as_not_created(setup):
    store, job = setup
    provider = Scripted([ValidationError("video too long")], [DONE])
    with pytest.raises(ValidationError):
        ProviderJobFlow(provider, store).run(job)
    assert _attempts(store) == ["refused"]
    ProviderJobFlow(Scripted([Accepted({"id": 8}, '{"id": 8}')], [DONE]), store).run(job)  # nothing existed
    assert _attempts(store) == ["refused", "downloaded"]


def test_a_lost_answer_is_uncertain_and_the_next_run_leaves_it_to_the_user(setup):
    store, job = setup
    with pytest.raises(UncertainCreate) as info:
        ProviderJobFlow(Scripted([Lost("connection dropped after the body was sent")], [DONE]), store).run(job)
    assert info.value.reconcile["reply_ref"] == "ref-1" and info.value.reconcile["sent_at"].endswith("Z")
    again = Scripted([Accepted({"id": 9}, '{"id": 9}')], [DONE])
    with pytest.raises(UncertainCreate, match="--resubmit-uncertain"):
        ProviderJobFlow(again, store).run(job)
    assert again.sent == 0
    ProviderJobFlow(again, store, FlowSettings(resubmit_uncertain=True)).run(job)
    assert again.sent == 1 and _attempts(store) == ["uncertain", "downloaded"]


def test_an_accepted_reply_without_a_readable_id_keeps_the_reply(setup):
    store, job = setup
    raw = '{"video_id": "v-123\x1b]0;pwned\x07", "note": "id under another name"}'  # raw control characters
    with pytest.raises(UncertainCreate) as info:
        ProviderJobFlow(Scripted([Accepted(json.loads(raw, strict=False), raw)], [DONE]), store).run(job)
    record = store.latest_create("key-1")
    assert record.state is CreateState.UNCERTAIN and record.raw_reply == raw
    assert "v-123" in str(info.value) and "\x1b" not in str(info.value)  # the id shown, inert


def test_success_is_sticky_a_missing_result_is_pending_and_polled_again(setup):
    store, job = setup
    first = Scripted([Accepted({"id": 5}, '{"id": 5}')], [RUNNING, DONE_NO_URL])
    with pytest.raises(ResultPending):
        ProviderJobFlow(first, store).run(job)
    assert store.latest_create("key-1").state is CreateState.SUCCEEDED
    later = Scripted([Accepted({"id": 6}, '{"id": 6}')], [DONE])
    result = ProviderJobFlow(later, store, FlowSettings(retry_failed=True)).run(job)
    assert later.sent == 0 and result.started_with.action == "poll"
    assert result.record.provider_job_id == "5" and result.path.read_bytes() == b"result of https://cdn.example/r.mp4"


def test_a_failure_after_a_reported_success_never_fails_the_segment(setup):
    store, job = setup
    provider = Scripted(
        [Accepted({"id": 5}, '{"id": 5}')],
        [DONE_NO_URL, JobStatus(JobState.FAILED, "8", error_message="generation failed")],
    )
    with pytest.raises(ProviderError, match="reported done"):
        ProviderJobFlow(provider, store).run(job)
    assert store.latest_create("key-1").state is CreateState.SUCCEEDED
    retry = Scripted([Accepted({"id": 6}, '{"id": 6}')], [DONE])
    ProviderJobFlow(retry, store, FlowSettings(retry_failed=True)).run(job)
    assert retry.sent == 0  # --retry-failed never pays again for a job the provider said succeeded


def test_a_downloaded_result_is_reused_without_asking_the_provider(setup):
    store, job = setup
    ProviderJobFlow(Scripted([Accepted({"id": 5}, '{"id": 5}')], [DONE]), store).run(job)
    job.result_path.write_bytes(b"x")  # not what was downloaded: fetched again, from the recorded URL
    again = Scripted([], [RUNNING])
    result = ProviderJobFlow(again, store).run(job)
    assert result.started_with.action == "download" and again.sent == 0


class Listing(Scripted):
    """A provider that lists its jobs by reference (useapi's replyRef in GET /videos)."""

    can_reconcile = True

    def __init__(self, creates, polls, listed):
        super().__init__(creates, polls)
        self.listed = listed

    def find_created(self, reply_ref):
        if isinstance(self.listed, Exception):
            raise self.listed
        return self.listed


def test_a_lost_create_the_provider_lists_is_adopted_and_one_it_does_not_list_is_created(setup):
    store, job = setup
    with pytest.raises(UncertainCreate):
        ProviderJobFlow(Listing([Lost("dropped")], [DONE], None), store).run(job)
    found = Listing([], [DONE], (JobHandle("pixverse", "41", {}, 1.0), '{"video_id": "41"}'))
    result = ProviderJobFlow(found, store).run(job)
    assert found.sent == 0 and result.record.provider_job_id == "41" and result.started_with.action == "reconcile"

    store.record_uncertain("key-2", store.record_intent("key-2", job.ref), error="killed", reconcile={})
    other = SegmentJob("key-2", job.ref, job.request, "ref-2", job.result_path.with_name("r2.mp4"))
    unlisted = Listing([Accepted({"id": 42}, '{"id": 42}')], [DONE], None)
    assert ProviderJobFlow(unlisted, store).run(other).record.provider_job_id == "42" and unlisted.sent == 1

    store.record_uncertain("key-3", store.record_intent("key-3", job.ref), error="killed", reconcile={})
    third = SegmentJob("key-3", job.ref, job.request, "ref-3", job.result_path.with_name("r3.mp4"))
    down = Listing([Accepted({"id": 43}, '{"id": 43}')], [DONE], ProviderError("list unavailable"))
    with pytest.raises(UncertainCreate):  # a lookup that fails decides nothing
        ProviderJobFlow(down, store).run(third)
    assert down.sent == 0
