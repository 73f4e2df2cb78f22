"""The adaptive poller: pure interval and verdict functions, and wait_for_job on a scripted provider + fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ResultPending, GenerationFailed, JobTimeout, Moderated
from pipeline.providers.base import JobHandle, JobState, JobStatus
from pipeline.providers.http import RetriesExhausted
from pipeline.providers.poll import Outcome, PollPolicy, judge, next_interval, wait_for_job

policies = st.builds(
    PollPolicy,
    initial=st.floats(0.01, 10), factor=st.floats(1.0, 3.0), maximum=st.floats(10, 60), timeout=st.floats(1, 3600),
)


@given(policies, st.integers(0, 500), st.floats(0, 4000))
def test_interval_bounded_and_never_past_deadline(policy, polls, elapsed):
    wait = next_interval(policy, polls, elapsed)
    assert 0 <= wait <= policy.maximum
    assert elapsed + wait <= max(policy.timeout, elapsed) + 1e-9


@given(policies, st.integers(0, 200))
def test_interval_grows_then_holds(policy, polls):
    a = next_interval(policy, polls, 0.0)
    b = next_interval(policy, polls + 1, 0.0)
    assert b >= a or b == policy.timeout
    assert next_interval(policy, 1, 0.0) == pytest.approx(min(policy.initial, policy.timeout))


def test_default_policy_runs_2s_to_10s():
    p = PollPolicy()
    waits = [next_interval(p, n, 0) for n in range(1, 30)]
    assert waits[0] == 2.0 and max(waits) == 10.0 and waits == sorted(waits)


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        PollPolicy(initial=10, maximum=5)
    with pytest.raises(ValueError):
        PollPolicy(initial=0)


def _status(state, raw="x", url=None, unconfirmed=False, **kw):
    return JobStatus(state, raw, result_url=url, unconfirmed=unconfirmed, **kw)


@pytest.mark.parametrize("status,outcome", [
    (_status(JobState.SUCCEEDED, url="https://r/x.mp4"), Outcome.SUCCEEDED),
    (_status(JobState.SUCCEEDED), Outcome.WAIT),                      # no evidence, no success
    (_status(JobState.RUNNING), Outcome.WAIT),
    (_status(JobState.FAILED), Outcome.FAILED),
    (_status(JobState.MODERATED), Outcome.FAILED),
    (_status(JobState.CANCELED), Outcome.FAILED),
])
def test_judge(status, outcome):
    assert judge(status, 0, PollPolicy()).outcome is outcome


def test_judge_stops_waiting_on_done_without_result_but_never_fails_it():
    p = PollPolicy(max_unconfirmed=3)
    s = _status(JobState.RUNNING, unconfirmed=True)
    assert judge(s, 2, p).outcome is Outcome.WAIT
    assert judge(s, 3, p).outcome is Outcome.PENDING


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


class Scripted:
    """A provider whose poll replies follow a script (the last entry repeats); an Exception is raised."""

    name = "scripted"

    def __init__(self, script, policy=None):
        self.script = list(script)
        self.polls = 0
        self.canceled = False
        self.poll_policy = policy or PollPolicy(initial=1, maximum=4, timeout=60)

    def poll(self, handle):
        item = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        if isinstance(item, Exception):
            raise item
        return item

    def cancel(self, handle):
        self.canceled = True
        return True


H = JobHandle("scripted", "job-7")


def test_wait_returns_the_success_with_its_url():
    ok = _status(JobState.SUCCEEDED, url="https://r/x.mp4")
    clock = FakeClock()
    seen = []
    got = wait_for_job(Scripted([_status(JobState.QUEUED), _status(JobState.RUNNING), ok]), H,
                       on_status=seen.append, clock=clock, sleep=clock.sleep)
    assert got == ok and [s.state for s in seen] == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    assert clock.sleeps == [1.0, 1.0 * 1.25]


@given(st.lists(st.sampled_from(["queued", "running", "done-no-url", "poll-error"]), max_size=12))
def test_flapping_never_yields_a_premature_success(prefix):
    """Whatever lies come first (done without a URL, errors, going back to queued), the only success
    returned is the one with evidence."""
    make = {"queued": _status(JobState.QUEUED), "running": _status(JobState.RUNNING),
            "done-no-url": _status(JobState.SUCCEEDED, raw="1"),
            "poll-error": RetriesExhausted("503", provider="scripted")}
    ok = _status(JobState.SUCCEEDED, url="https://r/x.mp4", raw="1")
    clock = FakeClock()
    provider = Scripted([make[p] for p in prefix] + [ok], PollPolicy(initial=1, maximum=2, timeout=1000))
    assert wait_for_job(provider, H, clock=clock, sleep=clock.sleep) is ok
    assert provider.polls == len(prefix) + 1


@pytest.mark.parametrize("state,error", [(JobState.FAILED, GenerationFailed), (JobState.MODERATED, Moderated)])
def test_wait_raises_typed_failures(state, error):
    clock = FakeClock()
    with pytest.raises(error) as info:
        wait_for_job(Scripted([_status(JobState.RUNNING), _status(state, raw="8", error_message="it broke")]), H,
                     clock=clock, sleep=clock.sleep)
    assert "job-7" in str(info.value) and "it broke" in str(info.value)
    assert info.value.exit_code == 5


def test_stuck_job_times_out_within_the_bound_and_is_canceled():
    clock = FakeClock()
    provider = Scripted([_status(JobState.RUNNING, raw="5")], PollPolicy(initial=1, factor=2, maximum=8, timeout=30))
    with pytest.raises(JobTimeout) as info:
        wait_for_job(provider, H, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(30)            # never sleeps past the deadline
    assert provider.canceled and "job-7" in str(info.value) and info.value.exit_code == 2
    assert "5" in str(info.value)                   # the last raw status is reported


def test_done_without_result_ends_the_wait_as_pending_not_failed():
    clock = FakeClock()
    provider = Scripted([_status(JobState.RUNNING, raw="completed", unconfirmed=True)],
                        PollPolicy(initial=1, maximum=1, timeout=100, max_unconfirmed=4))
    with pytest.raises(ResultPending) as info:
        wait_for_job(provider, H, clock=clock, sleep=clock.sleep)
    assert provider.polls == 4 and info.value.exit_code == 2 and not isinstance(info.value, GenerationFailed)
    assert "run again" in str(info.value)


def test_poll_errors_do_not_end_the_wait_before_the_deadline():
    clock = FakeClock()
    provider = Scripted([RetriesExhausted("HTTP 503", provider="scripted")],
                        PollPolicy(initial=1, maximum=1, timeout=10))
    with pytest.raises(JobTimeout) as info:
        wait_for_job(provider, H, clock=clock, sleep=clock.sleep)
    assert provider.polls == 11 and "no status received" in str(info.value)


def test_done_with_a_url_but_no_size_is_taken_after_the_grace():
    """A provider that never confirms a size (PixVerse's doc sample says `size: 0`) still delivers: after
    `accept_unconfirmed_after` such replies in a row the URL is taken, marked unconfirmed."""
    clock = FakeClock()
    sizeless = _status(JobState.RUNNING, raw="1", url="https://r/x.mp4", unconfirmed=True)
    provider = Scripted([_status(JobState.RUNNING, raw="5"), sizeless],
                        PollPolicy(initial=1, maximum=1, timeout=100, accept_unconfirmed_after=3))
    got = wait_for_job(provider, H, clock=clock, sleep=clock.sleep)
    assert got.state is JobState.SUCCEEDED and got.result_url == "https://r/x.mp4" and got.unconfirmed
    assert provider.polls == 4


def test_done_with_a_url_interrupted_by_running_restarts_the_grace():
    clock = FakeClock()
    sizeless = _status(JobState.RUNNING, raw="1", url="https://r/x.mp4", unconfirmed=True)
    script = [sizeless, sizeless, _status(JobState.RUNNING, raw="5"), sizeless, sizeless, sizeless]
    provider = Scripted(script, PollPolicy(initial=1, maximum=1, timeout=100, accept_unconfirmed_after=3))
    assert wait_for_job(provider, H, clock=clock, sleep=clock.sleep).state is JobState.SUCCEEDED
    assert provider.polls == 6
