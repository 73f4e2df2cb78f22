"""The chaos harness of `make chaos` (bench/chaos.py) itself: its audit catches what it exists to catch,
its kills are aimed where a run can still go, and a short real run (3 SIGKILLs) passes."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import pipeline
from bench.chaos import (
    MOMENTS,
    SMALL_BATCH,
    ChaosSettings,
    CreateRow,
    EmuJob,
    RunView,
    account,
    attribute,
    choose_kill,
    judge_uncertain,
    reachable,
    run_chaos,
    view_of,
)
from pipeline.killpoints import KILL_POINTS

ASKED = ("v" * 64, "a" * 64, None)  # what the segment's create asked (video, audio, text)
RECONCILE = {"video_sha256": ASKED[0], "audio_sha256": ASKED[1], "text": ASKED[2]}


def row(
    attempt: int, state: str, job: str | None = None, *, error: str | None = None, reconcile: dict | None = None
) -> CreateRow:
    return CreateRow("voiced", 0, "pixverse", attempt, state, job, error, reconcile)


def emu_job(job_id: str, lost: str | None = None) -> EmuJob:
    return EmuJob("pixverse", job_id, lost, ASKED)


def test_a_second_create_nobody_lost_the_answer_to_is_caught():
    books = account({("voiced", 0)}, [row(1, "downloaded", "101")], [emu_job("101"), emu_job("103")])
    assert any("paid twice" in v for v in books.violations)
    assert books.accepted == 2 and books.needed == 1


def test_a_lost_answer_resubmitted_is_accounted_for():
    lost = row(1, "uncertain", error="the create got no usable answer (HTTP 502)", reconcile=RECONCILE)
    jobs = [emu_job("101", lost="502 from a gateway"), emu_job("103")]
    books = account({("voiced", 0)}, [lost, row(2, "downloaded", "103")], jobs)
    assert books.violations == ()
    assert (books.accepted, books.needed, books.lost_to_faults, books.lost_to_kills) == (2, 1, 1, 0)


def test_an_uncertain_create_is_legitimate_only_if_accepted_or_cut_off_by_a_kill():
    lost = row(1, "uncertain", error="the create got no usable answer (HTTP 502)", reconcile=RECONCILE)
    accepted = attribute([lost], [emu_job("101", lost="502 from a gateway")])
    assert judge_uncertain(("voiced", 0), [lost], accepted).legit
    nothing = attribute([lost], [])
    assert not judge_uncertain(("voiced", 0), [lost], nothing).legit  # the flow called a refusal uncertain
    killed = row(
        1,
        "uncertain",
        error="the process stopped after sending the create, before its answer was recorded",
        reconcile=RECONCILE,
    )
    assert judge_uncertain(("voiced", 0), [killed], attribute([killed], [])).legit


def test_an_adopted_lost_answer_is_not_an_orphan():
    adopted = row(1, "downloaded", "101", reconcile=RECONCILE)
    books = account({("voiced", 0)}, [adopted], [emu_job("101", lost="connection dropped")])
    assert books.violations == () and books.adopted == 1 and books.lost_to_faults == 0


def test_a_job_held_by_an_uncertain_create_is_no_target():
    rows = [
        CreateRow("px", 0, "pixverse", 1, "uncertain", None, "lost", RECONCILE),
        CreateRow("fal", 0, "fal", 1, "created", "f-1", None, None),
    ]
    needed = {("px", 0), ("px", 1), ("fal", 0), ("ua", 0)}
    view = view_of(rows, {"px": "uncertain", "fal": "poll", "ua": "done"}, needed)
    assert (view.to_create, view.to_poll, view.to_fetch, view.to_finish) == (0, 1, 0, 1)
    assert view.stages == ("poll", "uncertain")


@given(st.tuples(*[st.integers(0, 4)] * 4), st.integers(0, 2**32), st.lists(st.sampled_from(MOMENTS), max_size=20))
def test_kills_are_aimed_only_where_the_run_can_still_go(counts, seed, hit):
    view = RunView(*counts)
    kill = choose_kill(view, Counter(hit), random.Random(seed))
    room = reachable(view)
    if not any(room.values()):
        assert kill is None
    elif kill.point is not None:
        assert 1 <= kill.nth <= room[kill.point]
        least = min(Counter(hit)[m] for m, n in room.items() if n)
        assert Counter(hit)[kill.point] == least  # the least-hit reachable moment first
    else:
        assert kill.after_s > 0


def test_a_short_chaos_run_passes():
    said: list[str] = []
    tally = run_chaos(ChaosSettings(kills=3, seed=7, jobs=SMALL_BATCH), say=said.append)
    assert tally.violations == [], "\n".join(said + tally.violations)
    assert tally.kills == 3 and tally.rounds >= 1
    assert tally.accepted == tally.needed + tally.lost_to_faults + tally.lost_to_kills
    assert tally.delivered == tally.jobs and tally.identical == tally.files > 0
    assert tally.checksums_ok == tally.rounds


def test_every_named_kill_point_is_wired_into_the_pipeline():
    """A point listed but never called would make every kill aimed at it miss (`handoff` once did)."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in Path(pipeline.__file__).parent.rglob("*.py"))
    called = set(re.findall(r'kill_point\("([a-z_]+)"\)', source))
    assert called == set(KILL_POINTS)
