"""The adaptive poller: pure interval and verdict functions, and wait_for_job on a scripted provider + fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import GenerationFailed, JobTimeout, Moderated, ResultPending
from pipeline.providers.base import JobHandle, JobState, JobStatus
from pipeline.providers.http import RetriesExhausted
from pipeline.providers.poll import Outcome, PollPolicy, judge, next_interval, wait_for_job

policies = st.builds(
    PollPolicy,
    initial=st.floats(0.01, 10),
    factor=st.floats(1.0, 3.0),
    maximum=st.floats(10, 60),
    timeout=st.floats(1, 3600),
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


@pytest.mark.parametrize(
    "status,outcome",
    [
        (_status(JobState.SUCCEEDED, url="https://r/x.mp4"), Outcome.SUCCEEDED),
        (_status(JobState.SUCCEEDED), Outcome.WAIT),  # no evidence, no success
        (_status(JobState.RUNNING), Outcome.WAIT),
        (_status(JobState.FAILED), Outcome.FAILED),
        (_status(JobState.MODERATED), Outcome.FAILED),
        (_status(JobState.CANCELED), Outcome.FAILED),
    ],
)
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
    got = wait_for_job(
        Scripted([_status(JobState.QUEUED), _status(JobState.RUNNING), ok]),
        H,
        on_status=seen.append,
        clock=clock,
        sleep=clock.sleep,
    )
    assert got == ok and [s.state for s in seen] == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    assert clock.sleeps == [1.0, 1.0 * 1.25]


@given(st.lists(st.sampled_from(["queued", "running", "done-no-url", "poll-error"]), max_size=12))
def test_flapping_never_yields_a_premature_success(prefix):
    """Whatever lies come first (done without a URL, errors, going back to queued), the only success
    returned is the one with evidence."""
    make = {
        "queued": _status(JobState.QUEUED),
        "running": _status(JobState.RUNNING),
        "done-no-url": _status(JobState.SUCCEEDED, raw="1"),
        "poll-error": RetriesExhausted("503", provider="scripted"),
    }
    ok = _status(JobState.SUCCEEDED, url="https://r/x.mp4", raw="1")
    clock = FakeClock()
    provider = Scripted([make[p] for p in prefix] + [ok], PollPolicy(initial=1, maximum=2, timeout=1000))
    assert wait_for_job(provider, H, clock=clock, sleep=clock.sleep) is ok
    assert provider.polls == len(prefix) + 1


@pytest.mark.parametrize("state,error", [(JobState.FAILED, GenerationFailed), (JobState.MODERATED, Moderated)])
def test_wait_raises_typed_failures(state, error):
    clock = FakeClock()
    with pytest.raises(error) as info:
        wait_for_job(
            Scripted([_status(JobState.RUNNING), _status(state, raw="8", error_message="it broke")]),
            H,
            clock=clock,
            sleep=clock.sleep,
        )
    assert "job-7" in str(info.value) and "it broke" in str(info.value)
    assert info.value.exit_code == 5


def test_stuck_job_times_out_within_the_bound_and_is_canceled():
    clock = FakeClock()
    provider = Scripted([_status(JobState.RUNNING, raw="5")], PollPolicy(initial=1, factor=2, maximum=8, timeout=30))
    with pytest.raises(JobTimeout) as info:
        wait_for_job(provider, H, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(30)  # never sleeps past the deadline
    assert provider.canceled and "job-7" in str(info.value) and info.value.exit_code == 2
    assert "5" in str(info.value)  # the last raw status is reported


def test_done_without_result_ends_the_wait_as_pending_not_failed():
    clock = FakeClock()
    provider = Scripted(
        [_status(JobState.RUNNING, raw="completed", unconfirmed=True)],
        PollPolicy(initial=1, maximum=1, timeout=100, max_unconfirmed=4),
    )
    with pytest.raises(ResultPending) as info:
        wait_for_job(provider, H, clock=clock, sleep=clock.sleep)
    assert provider.polls == 4 and info.value.exit_code == 2 and not isinstance(info.value, GenerationFailed)
    assert "run again" in str(info.value)


def test_poll_errors_do_not_end_the_wait_before_the_deadline():
    clock = FakeClock()
    provider = Scripted(
        [RetriesExhausted("HTTP 503", provider="scripted")], PollPolicy(initial=1, maximum=1, timeout=10)
    )
    with pytest.raises(JobTimeout) as info:
        wait_for_job(provider, H, clock=clock, sleep=clock.sleep)
    assert provider.polls == 11 and "no status received" in str(info.value)


def test_done_with_a_url_but_no_size_is_taken_after_the_grace():
    """A provider that never confirms a size (PixVerse's doc sample says `size: 0`) still delivers: after
    `accept_unconfirmed_after` such replies in a row the URL is taken, marked unconfirmed."""
    clock = FakeClock()
    sizeless = _status(JobState.RUNNING, raw="1", url="https://r/x.mp4", unconfirmed=True)
    provider = Scripted(
        [_status(JobState.RUNNING, raw="5"), sizeless],
        PollPolicy(initial=1, maximum=1, timeout=100, accept_unconfirmed_after=3),
    )
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


# ---- the schedule that learns when jobs finish --------------------------------------------------------

from dataclasses import replace  # noqa: E402

from pipeline.providers.poll import WINDOW_POLLS, CompletionEstimate, DurationEstimator, estimate_from  # noqa: E402
from pipeline.providers.sse import StreamBroken, bytes_since_blank_line  # noqa: E402

estimates = st.builds(
    CompletionEstimate, median=st.floats(0, 600), spread=st.floats(0, 300), samples=st.integers(1, 64)
)


@given(policies, st.integers(0, 500), st.floats(0, 4000), estimates)
def test_learned_interval_never_past_the_deadline_nor_under_the_minimum(policy, polls, elapsed, estimate):
    wait = next_interval(policy, polls, elapsed, estimate)
    assert 0 <= wait <= policy.maximum
    assert elapsed + wait <= max(policy.timeout, elapsed) + 1e-9
    assert wait >= policy.initial or elapsed + wait >= policy.timeout - 1e-9


@given(policies.filter(lambda p: p.timeout > 3000), estimates, st.floats(0, 1), st.floats(0, 2000))
def test_learned_interval_is_densest_inside_the_window(policy, estimate, where, away):
    """Inside the expected window polls are densest (the minimum, or the window's width over WINDOW_POLLS
    if that is longer); the farther from it, the sparser."""
    low, high = estimate.window
    inside = max(0.0, low + where * (high - low))
    before, after = max(0.0, low - away), high + away
    dense = min(policy.maximum, max(policy.initial, (high - low) / WINDOW_POLLS))
    assert next_interval(policy, 5, inside, estimate) == pytest.approx(dense)
    for outside in (before, after):
        assert next_interval(policy, 5, outside, estimate) >= next_interval(policy, 5, inside, estimate)
    assert next_interval(policy, 5, high + away + 10, estimate) >= next_interval(policy, 5, after, estimate)


@given(st.lists(st.floats(0.5, 600), min_size=1, max_size=80))
def test_estimate_brackets_the_median_and_ignores_order(durations):
    est = estimate_from(durations)
    low, high = est.window
    assert low <= sorted(durations)[len(durations) // 2] <= high
    assert est.spread >= 0.1 * est.median and est.samples == len(durations)
    assert estimate_from(list(reversed(durations))) == est


def test_few_samples_give_a_wide_window():
    one, many = estimate_from([40.0]), estimate_from([40.0] * 25)
    assert one.spread == pytest.approx(20.0) and many.spread == pytest.approx(4.0)
    assert estimate_from([]) is None


def test_estimator_is_shared_safely_between_threads():
    import threading

    est = DurationEstimator(keep=64)
    threads = [threading.Thread(target=lambda: [est.record(30.0) for _ in range(200)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert est.estimate().samples == 64 and est.estimate().median == 30.0


class Timed(Scripted):
    """A provider whose job finishes at `done_at` on a fake clock (the poll it answers shows it)."""

    def __init__(self, clock, done_at, policy):
        super().__init__([], policy)
        self.clock, self.done_at = clock, done_at
        self.durations = DurationEstimator()

    def poll(self, handle):
        self.polls += 1
        if self.clock.now >= self.done_at:
            return _status(JobState.SUCCEEDED, url="https://r/x.mp4")
        return _status(JobState.RUNNING)


def test_a_finished_job_teaches_the_next_wait_to_poll_where_it_ended():
    policy = PollPolicy(initial=2, factor=1.25, maximum=10, timeout=600)
    first_clock, second_clock = FakeClock(), FakeClock()
    first = Timed(first_clock, 41.0, policy)
    wait_for_job(first, H, clock=first_clock, sleep=first_clock.sleep)
    learned = first.durations.estimate()
    assert learned.samples == 1 and first_clock.now - 10 <= learned.median <= first_clock.now
    second = Timed(second_clock, 41.0, policy)
    second.durations = first.durations
    wait_for_job(second, H, clock=second_clock, sleep=second_clock.sleep)
    low, high = learned.window
    assert low <= 41.0 <= high
    assert second_clock.now - 41.0 <= max(policy.initial, (high - low) / WINDOW_POLLS)  # one dense interval
    assert second_clock.now < first_clock.now  # the schedule alone noticed it later
    dense = max(policy.initial, (high - low) / WINDOW_POLLS)
    assert second_clock.sleeps[0] > min(second_clock.sleeps) == pytest.approx(dense)


def test_a_done_first_reply_teaches_nothing():
    """A job already done when the wait starts (a resumed run) has no known duration."""
    clock = FakeClock()
    provider = Timed(clock, 0.0, PollPolicy())
    wait_for_job(provider, H, clock=clock, sleep=clock.sleep)
    assert provider.durations.estimate() is None


class Streaming(Scripted):
    """A provider with a status stream: yields `pushed`, then raises `then` (or just ends)."""

    streams_status = True

    def __init__(self, pushed, then, script, policy=None):
        super().__init__(script, policy)
        self.pushed, self.then, self.streams = pushed, then, 0

    def stream_statuses(self, handle, timeout, on_chunk):
        self.streams += 1
        yield from self.pushed
        if self.then is not None:
            raise self.then


def test_a_stream_that_ends_the_job_needs_no_poll():
    ok = _status(JobState.SUCCEEDED, url="https://r/x.mp4")
    clock, seen = FakeClock(), []
    provider = Streaming([_status(JobState.QUEUED), _status(JobState.RUNNING), ok], None, [])
    assert wait_for_job(provider, H, on_status=seen.append, clock=clock, sleep=clock.sleep) is ok
    assert provider.streams == 1 and provider.polls == 0 and len(seen) == 3 and clock.sleeps == []


@pytest.mark.parametrize(
    "then", [StreamBroken("connection dropped"), None, RetriesExhausted("result: HTTP 503", provider="scripted")]
)
def test_a_broken_stream_falls_back_to_polling(then):
    ok = _status(JobState.SUCCEEDED, url="https://r/x.mp4")
    clock, seen = FakeClock(), []
    provider = Streaming([_status(JobState.RUNNING)], then, [_status(JobState.RUNNING), ok])
    assert wait_for_job(provider, H, on_status=seen.append, clock=clock, sleep=clock.sleep) is ok
    assert provider.streams == 1 and provider.polls == 2
    assert [s.state for s in seen] == [JobState.RUNNING, JobState.RUNNING, JobState.SUCCEEDED]


def test_a_stream_reporting_failure_fails_the_job():
    provider = Streaming(
        [_status(JobState.RUNNING), _status(JobState.FAILED, raw="COMPLETED", error_message="it broke")], None, []
    )
    clock = FakeClock()
    with pytest.raises(GenerationFailed):
        wait_for_job(provider, H, clock=clock, sleep=clock.sleep)
    assert provider.polls == 0


def test_a_stream_that_outlives_the_deadline_times_out_without_polling():
    clock = FakeClock()

    class Slow(Streaming):
        def stream_statuses(self, handle, timeout, on_chunk):
            self.streams += 1
            clock.now += timeout  # the stream ran until its deadline
            yield _status(JobState.RUNNING)

    provider = Slow([], None, [_status(JobState.RUNNING)], PollPolicy(initial=1, maximum=4, timeout=60))
    with pytest.raises(JobTimeout):
        wait_for_job(provider, H, clock=clock, sleep=clock.sleep)
    assert provider.polls == 0 and provider.canceled


# ---- the stream's event-size meter ----------------------------------------------------------------------


def _meter(chunks):
    since, previous = 0, b""
    for chunk in chunks:
        since = bytes_since_blank_line(since, previous, chunk)
        previous = (previous + chunk)[-2:]
    return since


@given(st.lists(st.sampled_from([b"a", b"data: x", b"\n", b"\r", b"\r\n", b":"]), max_size=60), st.data())
def test_event_meter_does_not_depend_on_how_the_bytes_are_chunked(pieces, data):
    whole = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=8)))
    chunks = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    assert _meter(chunks) == _meter([whole])


@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=20),
    st.sampled_from([b"\n\n", b"\r\r", b"\r\n\r\n", b"\n\r\n"]),
)
def test_event_meter_counts_only_the_event_in_progress(bodies, end):
    events = b"".join(b"data: " + body + end for body in bodies)
    assert _meter([events, b"data: open"]) == len(b"data: open")
    assert _meter([b"data: " + b"x" * 100 + b"\ndata: more"]) == len(b"data: " + b"x" * 100 + b"\ndata: more")


def test_before_any_job_finished_the_expected_time_stands_in_for_one():
    policy = PollPolicy(initial=2, factor=1.25, maximum=10, timeout=600, expected_s=34.0)
    guessed, blind = FakeClock(), FakeClock()
    wait_for_job(Timed(guessed, 34.0, policy), H, clock=guessed, sleep=guessed.sleep)
    wait_for_job(Timed(blind, 34.0, replace(policy, expected_s=None)), H, clock=blind, sleep=blind.sleep)
    low, high = estimate_from([34.0]).window
    assert guessed.now - 34.0 <= max(policy.initial, (high - low) / WINDOW_POLLS) < blind.now - 34.0
    with pytest.raises(ValueError):
        PollPolicy(expected_s=0)


def test_a_streamed_done_is_learned_as_finishing_when_it_arrives():
    """Statuses on a stream come when they change: the job was running until the "done" arrived."""
    clock = FakeClock()

    class Live(Streaming):
        def stream_statuses(self, handle, timeout, on_chunk):
            yield _status(JobState.RUNNING)
            clock.now = 40.0
            yield _status(JobState.SUCCEEDED, url="https://r/x.mp4")

    provider = Live([], None, [])
    provider.durations = DurationEstimator()
    wait_for_job(provider, H, clock=clock, sleep=clock.sleep)
    assert provider.durations.estimate().median == 40.0
