"""The runner's pure decisions: never a create while a provider job may exist; keys change with inputs."""

from __future__ import annotations

import dataclasses

from hypothesis import given, strategies as st

from pipeline.providers.poll import PollPolicy
from pipeline.run.config import PollSection, RehearseSection
from pipeline.run.ledger import CreateRecord, CreateState
from pipeline.run.runner import Action, RunOptions, decide_segment, poll_policy, segment_key

records = st.builds(
    CreateRecord,
    idem_key=st.just("k"), attempt=st.integers(1, 5), job_id=st.just("a"), inputs_key=st.just("i"), segment=st.integers(0, 3),
    provider=st.sampled_from(["pixverse", "aimlapi", "useapi", "fal"]), state=st.sampled_from(list(CreateState)),
    handle=st.none(), provider_job_id=st.one_of(st.none(), st.text(min_size=1, max_size=8)),
    provider_state=st.none(), polls=st.integers(0, 9), final_status=st.none(), result_url=st.none(),
    download_path=st.none(), download_sha256=st.none(), download_size=st.none(), error=st.none(),
    reconcile=st.none(), intent_at=st.floats(0, 1e9), created_at=st.none(), finished_at=st.none(),
)


@given(records, st.booleans(), st.booleans(), st.booleans())
def test_never_creates_while_a_job_may_exist(record, have_result, resubmit, retry_failed):
    decision = decide_segment(record, have_result=have_result, resubmit_uncertain=resubmit, retry_failed=retry_failed)
    if decision.action is Action.CREATE:
        assert not record.state.live
        if record.state in (CreateState.INTENT, CreateState.UNCERTAIN):
            assert resubmit
        if record.state is CreateState.FAILED:
            assert retry_failed
    if record.state is CreateState.CREATED:
        assert decision.action is Action.POLL
    if record.state is CreateState.DOWNLOADED:
        assert decision.action is (Action.REUSE if have_result else Action.DOWNLOAD)
    assert decision.reason


def test_first_time_creates():
    assert decide_segment(None, have_result=False, resubmit_uncertain=False, retry_failed=False).action is Action.CREATE


@given(st.text(max_size=20), st.text(max_size=20))
def test_segment_key_changes_with_what_is_said(a, b):
    ka = segment_key("job", "fal", 0, "v" * 64, None, a, "Emily")
    kb = segment_key("job", "fal", 0, "v" * 64, None, b, "Emily")
    assert (ka == kb) == (a == b)
    assert ka != segment_key("job", "aimlapi", 0, "v" * 64, None, a, "Emily")
    assert ka != segment_key("job", "fal", 1, "v" * 64, None, a, "Emily")


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
