"""The runner's pure decisions: never a create while a provider job may exist; keys change with inputs."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from pipeline.providers.flow import Action, decide, segment_key
from pipeline.providers.poll import PollPolicy
from pipeline.providers.store import CreateRecord, CreateState
from pipeline.run.config import PollSection, RehearseSection
from pipeline.run.runner import RunOptions, poll_policy

records = st.builds(
    CreateRecord,
    idem_key=st.just("k"),
    attempt=st.integers(1, 5),
    job_id=st.just("a"),
    inputs_key=st.just("i"),
    segment=st.integers(0, 3),
    provider=st.sampled_from(["pixverse", "aimlapi", "useapi", "fal"]),
    state=st.sampled_from(list(CreateState)),
    handle=st.none(),
    provider_job_id=st.one_of(st.none(), st.text(min_size=1, max_size=8)),
    provider_state=st.none(),
    polls=st.integers(0, 9),
    final_status=st.none(),
    result_url=st.one_of(st.none(), st.just("https://cdn.example/r.mp4")),
    download_path=st.none(),
    download_sha256=st.none(),
    download_size=st.none(),
    error=st.none(),
    reconcile=st.none(),
    raw_reply=st.none(),
    intent_at=st.floats(0, 1e9),
    created_at=st.none(),
    finished_at=st.none(),
)


@given(records, st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_never_creates_while_a_job_may_exist(record, have_result, resubmit, retry_failed, can_reconcile):
    decision = decide(
        record,
        have_result=have_result,
        resubmit_uncertain=resubmit,
        retry_failed=retry_failed,
        can_reconcile=can_reconcile,
    )
    if decision.action is Action.CREATE:
        assert not record.state.live
        if record.state in (CreateState.INTENT, CreateState.UNCERTAIN):
            assert resubmit and not can_reconcile  # a provider that can look it up is asked first
        if record.state is CreateState.FAILED:
            assert retry_failed
    if record.state is CreateState.CREATED:
        assert decision.action is Action.POLL
    if record.state is CreateState.SUCCEEDED:  # success is sticky: never re-created, whatever the flags
        assert decision.action is (Action.DOWNLOAD if record.result_url else Action.POLL)
    if record.state is CreateState.DOWNLOADED:
        assert decision.action is (
            Action.REUSE if have_result else Action.DOWNLOAD if record.result_url else Action.POLL
        )
    if record.state is CreateState.REFUSED:
        assert decision.action is Action.CREATE
    if record.state in (CreateState.INTENT, CreateState.UNCERTAIN) and not (resubmit or can_reconcile):
        assert decision.action is Action.UNCERTAIN
    assert decision.reason


def test_first_time_creates():
    decision = decide(None, have_result=False, resubmit_uncertain=False, retry_failed=False, can_reconcile=False)
    assert decision.action is Action.CREATE


@given(st.text(max_size=20), st.text(max_size=20))
def test_segment_key_changes_with_what_is_said(a, b):
    def key(**changes):
        return segment_key(
            **{
                "job": "job",
                "provider": "fal",
                "segment": 0,
                "video": "v" * 64,
                "audio": None,
                "text": a,
                "speaker": "Emily",
                **changes,
            }
        )

    assert (key() == key(text=b)) == (a == b)
    assert key() != key(provider="aimlapi") and key() != key(segment=1)


def _config(**poll):
    @dataclasses.dataclass
    class Cfg:
        poll: PollSection
        rehearse: RehearseSection

    return Cfg(PollSection(**poll), RehearseSection(latency_s=0.4))


def test_poll_policy_overrides(monkeypatch):
    monkeypatch.delenv("LIPSYNC_POLL_INTERVAL", raising=False)
    default = PollPolicy()
    assert poll_policy(_config(), RunOptions(), default) == default
    rehearsal = poll_policy(_config(), RunOptions(rehearse=True), default)
    assert rehearsal.initial == 0.1 and rehearsal.maximum == 0.4
    configured = poll_policy(_config(interval_s=5, timeout_s=60), RunOptions(), default)
    assert (configured.initial, configured.timeout) == (5, 60) and configured.maximum >= 5
    monkeypatch.setenv("LIPSYNC_POLL_INTERVAL", "0.2")
    assert poll_policy(_config(), RunOptions(), default).initial == 0.2
