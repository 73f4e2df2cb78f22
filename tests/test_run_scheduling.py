"""CPU slots go to finishing paid work before preparing new work: the slot queue's order, and a rehearsed
batch on one slot whose ledger shows every downloaded job delivered before the next prepare started."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from runkit import make_batch_media, write_config

from pipeline.run.config import load_config
from pipeline.run.ledger import Ledger, Stage
from pipeline.run.progress import Progress
from pipeline.run.runner import CpuSlots, RunOptions, SlotUse, cpu_slot_count, run_batch

FINISH, PREPARE = SlotUse.FINISH, SlotUse.PREPARE


def _until(condition, what: str) -> None:
    """Wait for another thread to reach a state (a bound on a hang, not a timing assertion)."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.001)


class _Waiters:
    """Threads that each wait for a slot, record when they got it, and hold it until let go."""

    def __init__(self, slots: CpuSlots):
        self.slots = slots
        self.served: list[int] = []
        self.let_go = threading.Event()
        self.threads: list[threading.Thread] = []

    def arrive(self, use: SlotUse) -> None:
        """One more waiter; returns once it is in the queue, so arrival order is exactly call order."""
        index = len(self.threads)
        thread = threading.Thread(target=self._wait, args=(index, use), daemon=True)
        self.threads.append(thread)
        queued = len(self.slots.queued())
        thread.start()
        _until(lambda: len(self.slots.queued()) > queued or index in self.served, f"waiter {index} queued")

    def _wait(self, index: int, use: SlotUse) -> None:
        with self.slots.slot(use):
            self.served.append(index)
            self.let_go.wait()

    def finish(self) -> None:
        self.let_go.set()
        for thread in self.threads:
            thread.join(timeout=10)
            assert not thread.is_alive()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(list(SlotUse)), min_size=1, max_size=6))
def test_one_slot_serves_finishes_first_then_arrival_order(arrivals):
    slots = CpuSlots(1)
    waiters = _Waiters(slots)
    waiters.let_go.set()  # each waiter leaves as soon as it has the slot: one at a time
    with ExitStack() as held:
        held.enter_context(slots.slot(PREPARE))  # the slot is busy while they all arrive
        for use in arrivals:
            waiters.arrive(use)
        assert slots.queued() == sorted(arrivals)
    waiters.finish()
    assert waiters.served == sorted(range(len(arrivals)), key=lambda i: (arrivals[i], i))
    assert slots.queued() == []


def test_a_late_finish_overtakes_waiting_prepares_but_not_running_ones():
    slots = CpuSlots(2)
    waiters = _Waiters(slots)
    waiters.arrive(PREPARE)  # 0: runs at once
    waiters.arrive(PREPARE)  # 1: runs at once
    waiters.arrive(PREPARE)  # 2: waits
    waiters.arrive(PREPARE)  # 3: waits
    waiters.arrive(FINISH)  # 4: waits, but is served first
    assert sorted(waiters.served) == [0, 1] and slots.queued() == [FINISH, PREPARE, PREPARE]
    waiters.finish()
    assert waiters.served[2:] == [4, 2, 3]


def test_free_slots_serve_several_waiters_at_once():
    slots = CpuSlots(3)
    waiters = _Waiters(slots)
    for use in (PREPARE, FINISH, PREPARE):
        waiters.arrive(use)
    assert sorted(waiters.served) == [0, 1, 2] and slots.queued() == []  # nobody waits behind a free slot
    waiters.arrive(FINISH)
    assert slots.queued() == [FINISH]
    waiters.finish()


def test_cpu_slot_count():
    assert cpu_slot_count(1) == 1 and cpu_slot_count(6) == 6
    assert 1 <= cpu_slot_count(None) <= 4


# ---- a rehearsed batch ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobTimes:
    job_id: str
    prepare_start: float
    results_in: float  # the last of its provider results downloaded: from here on it waits to finish
    mux_start: float
    delivered: float


def _job_times(ledger: Ledger) -> list[JobTimes]:
    times = []
    for job in ledger.jobs():
        assert job.stage is Stage.DONE, (job.job_id, job.error)
        stages = {t.stage: t for t in ledger.stage_times(job.job_id)}
        creates = ledger.creates(job.job_id, current=True)
        times.append(
            JobTimes(
                job.job_id,
                stages[Stage.PREPARE].started_at,
                max(c.finished_at for c in creates),
                stages[Stage.MUX].started_at,
                job.finished_at,
            )
        )
    return times


def test_downloaded_jobs_are_delivered_before_new_prepares_start(tmp_path, monkeypatch):
    media = make_batch_media(tmp_path)
    monkeypatch.setenv("LIPSYNC_POLL_INTERVAL", "0.05")
    # results come back faster than a prepare runs, so finishing competes with preparing for the one slot
    config = write_config(
        tmp_path,
        [{"id": f"job-{i}", "video": media.video.name, "audio": media.voice.name} for i in range(5)],
        latency_s=0.2,
        max_jobs=5,
    )
    run = run_batch(load_config(config), RunOptions(rehearse=True, cpu_slots=1), Progress())
    assert run.exit_code == 0
    with Ledger.in_dir(tmp_path / "out", readonly=True) as ledger:
        jobs = _job_times(ledger)
    for done in jobs:
        # one prepare may take the slot in the instant between a job's last download and its asking for the
        # slot; once it asks, no prepare starts before its mux (first come first served would start them all)
        overtaking = [other.job_id for other in jobs if done.results_in < other.prepare_start < done.mux_start]
        assert len(overtaking) <= 1, f"{overtaking} started preparing while {done.job_id}'s results waited"
    # the slot really was contended: some job was delivered before another job's prepare began
    assert any(done.delivered <= other.prepare_start for done in jobs for other in jobs)
