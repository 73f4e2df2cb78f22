"""`make chaos`: "pays once, delivers after any crash", checked by force (issue 7, item 8).

A small batch (PixVerse, useapi and fal jobs; scripts long enough that a TTS job needs two creates) runs
against an in-process emulator with faults on: PixVerse 500044 and 429 storms on the first creates, an
accepted create whose answer is dropped or answered with a 5xx, a job stuck for a while, a truncated
download. The batch is SIGKILLed `CHAOS_KILLS` times (100 by default): at the named points of
`pipeline.killpoints` (each aimed at a moment the run can still reach, the least-hit first) and at random
wall-clock moments. After every kill the same run directory is run again. When a round's batch can get no
further, it is run to completion: a create reported uncertain is resubmitted only when that is legitimate,
i.e. the emulator accepted it and the ledger never learned its id (its answer was lost to a fault or a
kill), or a kill landed between the recorded intent and the emulator accepting it (no client can know).

Checked every round, against the emulator's own job list and a clean reference run of the same inputs:
- creates accepted = segments needed + accepted creates whose answer was lost and not found again (useapi
  finds lost creates by replyRef and adopts them: never counted twice); no other create;
- every job delivered; before resubmitting, uncertain only where a create was lost as above;
- every delivered media file byte-identical to the clean run's (the manifest and the editor's cut list aside:
  they record provider job ids and times); `sha256sum -c checksums.sha256` passes; nothing half-written left.
Prints its figures; exits 1 listing each violation. `CHAOS_SEED` replays a run's choices.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._media import tiny_clip
from pipeline.emulator import Emulator, EmulatorSettings

REPO = Path(__file__).resolve().parents[1]
MOMENTS = ("upload", "backoff", "after_send", "poll", "download", "mux", "handoff")
MIN_HITS = 3  # each moment, when CHAOS_KILLS is at least COVERAGE_FROM
COVERAGE_FROM = 50
RANDOM_SHARE = 0.4  # of the kills: at a random wall-clock moment rather than a named point
KILLS_PER_ROUND = 12  # then the round runs to completion: a job's mux alone can outlast a random kill
PROCESS_TIMEOUT_S = 300.0  # a `lipsync run` still alive after this is a hang: a violation
LATENCY_S = 0.3
STALL_S = 3.0

SCRIPT = (
    "Welcome back to the studio. Today we are looking at three ways to light a small room without buying "
    "anything new. First, move the desk to the window and let the daylight do the work. Second, bounce a "
    "desk lamp off the ceiling to soften the shadows. Third, use a white sheet as a reflector."
)


@dataclass(frozen=True)
class BatchJob:
    id: str
    provider: str
    text: str | None = None  # None: lip-synced to the voice track

    def toml(self) -> str:
        fields = {"id": self.id, "video": "clip.mp4", "provider": self.provider}
        fields.update({"text": self.text, "speaker": "James"} if self.text else {"audio": "voice.wav"})
        return "[[job]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())


BATCH = (
    BatchJob("px-voiced", "pixverse"),
    BatchJob("px-spoken", "pixverse", SCRIPT),
    BatchJob("ua-voiced", "useapi"),
    BatchJob("ua-spoken", "useapi", SCRIPT),
    BatchJob("fal-voiced", "fal"),
    BatchJob("fal-spoken", "fal", SCRIPT),
)
SMALL_BATCH = (
    BatchJob("px-spoken", "pixverse", SCRIPT),
    BatchJob("ua-voiced", "useapi"),
    BatchJob("fal-voiced", "fal"),
)

Segment = tuple[str, int]  # (job id, segment index)


# ---- what the run directory says (read with sqlite, not through the pipeline) -------------------------


@dataclass(frozen=True)
class CreateRow:
    job_id: str
    segment: int
    provider: str
    attempt: int
    state: str
    provider_job_id: str | None
    error: str | None
    reconcile: dict[str, Any] | None

    @property
    def seg(self) -> Segment:
        return (self.job_id, self.segment)

    @property
    def answerless(self) -> bool:
        """A create sent (or maybe sent) whose answer this attempt never recorded."""
        return self.state in ("intent", "uncertain")

    @property
    def adopted(self) -> bool:
        """A lost answer found again at the provider (useapi's replyRef)."""
        return self.reconcile is not None and self.provider_job_id is not None

    @property
    def killed_in_flight(self) -> bool:
        """Left by a process killed between recording the intent and recording the answer."""
        return self.state == "intent" or (
            self.state == "uncertain" and (self.error or "").startswith("the process stopped")
        )


@dataclass(frozen=True)
class RunView:
    """Where a run directory stands, as the ledger says, for aiming the next kill."""

    to_create: int  # segments without a live create (none yet, or the last one refused)
    to_poll: int  # segments created, not reported done yet
    to_fetch: int  # segments reported done, result not on disk yet
    to_finish: int  # jobs not done
    # (segments and jobs held up by an uncertain or failed create are left out: no run goes on with them)
    stages: tuple[str, ...] = ()  # the stages of the jobs not finished


def _connect(run_dir: Path) -> sqlite3.Connection | None:
    path = run_dir / "ledger.sqlite"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True) if path.is_file() else None


def read_rows(run_dir: Path) -> list[CreateRow]:
    db = _connect(run_dir)
    if db is None:
        return []
    with db:
        rows = db.execute(
            "SELECT job_id, segment, provider, attempt, state, provider_job_id, error, reconcile "
            "FROM creates ORDER BY job_id, segment, attempt"
        ).fetchall()
    db.close()
    return [CreateRow(*row[:7], json.loads(row[7]) if row[7] else None) for row in rows]


def read_stages(run_dir: Path) -> dict[str, str]:
    db = _connect(run_dir)
    if db is None:
        return {}
    with db:
        stages = dict(db.execute("SELECT job_id, stage FROM jobs").fetchall())
    db.close()
    return stages


def view_of(rows: list[CreateRow], stages: dict[str, str], needed: Collection[Segment]) -> RunView:
    latest = {row.seg: row.state for row in rows}  # rows come ordered by attempt
    held = {seg[0] for seg, state in latest.items() if state in ("intent", "uncertain", "failed")}
    unfinished = {seg[0] for seg in needed if stages.get(seg[0]) != "done"}
    going = [latest.get(seg) for seg in needed if seg[0] in unfinished - held]
    return RunView(
        to_create=sum(state in (None, "refused") for state in going),
        to_poll=going.count("created"),
        to_fetch=going.count("succeeded"),
        to_finish=len(unfinished - held),
        stages=tuple(sorted(stages.get(job, "pending") for job in unfinished)),
    )


# ---- where to kill next (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    point: str | None  # a named kill point, or None: a wall-clock kill
    nth: int = 1  # the n-th time the point is reached
    after_s: float = 0.0  # wall-clock kills: seconds after the start

    def env(self) -> dict[str, str]:
        return {"LIPSYNC_TEST_KILL_AT": f"{self.point}#{self.nth}"} if self.point else {}

    def __str__(self) -> str:
        return f"{self.point}#{self.nth}" if self.point else f"at {self.after_s:.1f}s"


def reachable(view: RunView) -> dict[str, int]:
    """Each moment the run can still reach, with how many times at least (the largest sensible `nth`)."""
    polled = view.to_create + view.to_poll
    return {
        "upload": view.to_create,
        "after_send": view.to_create,
        "backoff": view.to_create,
        "poll": polled,
        "download": polled + view.to_fetch,
        "mux": view.to_finish,
        "handoff": view.to_finish,
    }


def choose_kill(view: RunView, hits: Counter, rng: random.Random) -> Kill | None:
    """The next kill: None when the run can get no further; else at random, or the least-hit reachable point."""
    room = {moment: n for moment, n in reachable(view).items() if n > 0}
    if not room:
        return None
    if rng.random() < RANDOM_SHARE:
        return Kill(None, after_s=rng.uniform(0.5, 5.0))
    fewest = min(hits[moment] for moment in room)
    moment = rng.choice(sorted(m for m in room if hits[m] == fewest))
    return Kill(moment, nth=rng.randint(1, min(room[moment], 2)))


# ---- what the emulator holds --------------------------------------------------------------------------

Content = tuple[str, str | None, str | None]  # (video sha256, audio sha256, text): what a create asked


@dataclass(frozen=True)
class EmuJob:
    provider: str
    job_id: str
    answer_lost: str | None  # the emulator dropped its answer on purpose (a fault)
    content: Content


def _sha256(path: Path | None) -> str | None:
    return None if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(emu: Emulator, providers: Iterable[str]) -> list[EmuJob]:
    return [
        EmuJob(p, job.job_id, job.answer_lost, (_sha256(job.inputs.video), _sha256(job.inputs.audio), job.inputs.text))
        for p in providers
        for job in emu.jobs(p)
    ]


def _reconcile_content(row: CreateRow) -> Content | None:
    r = row.reconcile
    return None if not r or "video_sha256" not in r else (r["video_sha256"], r.get("audio_sha256"), r.get("text"))


# ---- the audit (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribution:
    """The emulator's jobs set against the ledger's: which accepted creates the ledger never learned of."""

    orphans: dict[Segment, list[EmuJob]]  # accepted, id unknown to the ledger, by the segment they were for
    stray: list[EmuJob]  # accepted, id unknown, and for no segment we can tell
    unknown_ids: list[str]  # ids in the ledger the emulator never gave out


def attribute(rows: list[CreateRow], jobs: list[EmuJob]) -> Attribution:
    known = {row.provider_job_id: row for row in rows if row.provider_job_id}
    by_content: dict[tuple[str, Content], Segment] = {}
    for row in rows:
        if (content := _reconcile_content(row)) is not None:
            by_content[(row.provider, content)] = row.seg
    for job in jobs:
        if job.job_id in known:
            by_content[(job.provider, job.content)] = known[job.job_id].seg
    orphans: dict[Segment, list[EmuJob]] = {}
    stray = []
    for job in jobs:
        if job.job_id in known:
            continue
        seg = by_content.get((job.provider, job.content))
        if seg is None:
            stray.append(job)
        else:
            orphans.setdefault(seg, []).append(job)
    emulated = {job.job_id for job in jobs}
    return Attribution(orphans, stray, sorted(set(known) - emulated))


@dataclass(frozen=True)
class Verdict:
    legit: bool
    reason: str


def judge_uncertain(seg: Segment, rows: list[CreateRow], attribution: Attribution) -> Verdict:
    """May this segment be uncertain? Only if its create was accepted with the answer lost, or a kill
    landed between the recorded intent and the emulator accepting (nothing exists; no client can know)."""
    if attribution.orphans.get(seg):
        return Verdict(True, "the emulator accepted its create; the answer was lost")
    if any(row.seg == seg and row.killed_in_flight for row in rows):
        return Verdict(True, "a kill landed between the recorded intent and the emulator accepting the create")
    return Verdict(
        False,
        f"{seg[0]} segment {seg[1]} is uncertain, but the emulator holds no create for it and no kill interrupted one",
    )


@dataclass(frozen=True)
class Accounts:
    needed: int
    accepted: int
    lost_to_faults: int  # orphans whose answer the emulator dropped on purpose
    lost_to_kills: int  # orphans whose answer a kill cut off
    adopted: int  # lost answers found again by replyRef
    violations: tuple[str, ...]


def account(needed: set[Segment], rows: list[CreateRow], jobs: list[EmuJob]) -> Accounts:
    """After a round's completion: every accepted create is a needed segment's or a lost answer's."""
    attribution = attribute(rows, jobs)
    violations = [f"the ledger names {job_id}, a job the emulator never created" for job_id in attribution.unknown_ids]
    violations += [
        f"{job.provider} job {job.job_id} was accepted for no segment of the batch" for job in attribution.stray
    ]
    delivered = Counter(row.seg for row in rows if row.state == "downloaded")
    violations += [
        f"{seg[0]} segment {seg[1]}: {delivered[seg]} results on record, expected one"
        for seg in sorted(needed)
        if delivered[seg] != 1
    ]
    for seg, orphans in sorted(attribution.orphans.items()):
        lost = sum(row.seg == seg and row.answerless for row in rows)
        if len(orphans) > lost:
            violations.append(
                f"{seg[0]} segment {seg[1]}: {len(orphans)} accepted creates the ledger never learned "
                f"of, but only {lost} answers went missing: a create was paid twice"
            )
    orphans = [job for group in attribution.orphans.values() for job in group]
    adopted = sum(row.adopted for row in rows)
    if len(jobs) != len(needed) + len(orphans):
        violations.append(f"{len(jobs)} creates accepted for {len(needed)} segments and {len(orphans)} lost answers")
    by_fault = sum(job.answer_lost is not None for job in orphans)
    return Accounts(len(needed), len(jobs), by_fault, len(orphans) - by_fault, adopted, tuple(violations))


def compare_finals(reference: dict[str, tuple[str, int]], delivered: dict[str, tuple[str, int]]) -> list[str]:
    """Each delivered file against the clean run's: (sha256, size) by path."""
    problems = []
    for name, (digest, size) in sorted(reference.items()):
        got = delivered.get(name)
        if got is None:
            problems.append(f"{name}: missing (the clean run delivered {size} bytes)")
        elif got[0] != digest:
            problems.append(f"{name}: differs from the clean run's ({got[1]} bytes vs {size})")
    return problems


# ---- running lipsync ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    killed: bool
    returncode: int
    stdout: str
    stderr: str

    def summary(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            return None


class Hang(Exception):
    pass


def lipsync_run(config: Path, emu: Emulator, kill: Kill | None, *args: str) -> Ran:
    """`lipsync run CONFIG --json ARGS` as its own process (with the short create backoff of bench._lipsync)."""
    env = {k: v for k, v in os.environ.items() if k != "LIPSYNC_TEST_KILL_AT"}
    env.update(emu.env(), LIPSYNC_POLL_INTERVAL="0.1", PYTHONPATH=str(REPO), **(kill.env() if kill else {}))
    cmd = [sys.executable, "-m", "bench._lipsync", "run", str(config), "--json", *args]
    wall_clock = kill is not None and kill.point is None
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=kill.after_s if wall_clock else PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            if not wall_clock:
                raise Hang(f"`lipsync run` still running after {PROCESS_TIMEOUT_S:g} s: {err[-2000:]}") from None
        finally:
            if proc.poll() is None:  # the harness itself was stopped: take the child along
                proc.kill()
    return Ran(proc.returncode == -9, proc.returncode, out, err)


RECORDS = frozenset({"manifest.json", "timeline.otio", "cuts.edl"})  # name provider job ids: differ run to run


def delivered_files(run_dir: Path, jobs: Iterable[BatchJob]) -> dict[str, tuple[str, int]]:
    files = {}
    for job in jobs:
        for path in sorted((run_dir / job.id).glob("*")):
            if path.is_file() and path.name not in RECORDS:
                files[f"{job.id}/{path.name}"] = (_sha256(path), path.stat().st_size)
    return files


def checksums_pass(run_dir: Path) -> tuple[bool, str]:
    """`sha256sum -c checksums.sha256` in the run directory."""
    if not (run_dir / "checksums.sha256").is_file():
        return False, "no checksums.sha256"
    if shutil.which("sha256sum") is None:
        raise SystemExit("chaos: sha256sum (coreutils) is needed to check checksums.sha256")
    done = subprocess.run(
        ["sha256sum", "-c", "--quiet", "checksums.sha256"], cwd=run_dir, capture_output=True, text=True
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()


# ---- one batch folder ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    clip: Path
    voice: Path


def make_inputs(folder: Path) -> Inputs:
    folder.mkdir(parents=True, exist_ok=True)
    clip, voice = tiny_clip(folder, seconds=2, fps=25, words="Two seconds of words to lip-sync.")
    return Inputs(clip, voice)


def write_batch(folder: Path, inputs: Inputs, jobs: Iterable[BatchJob], emu: Emulator) -> Path:
    folder.mkdir(parents=True)
    for source in (inputs.clip, inputs.voice):
        (folder / source.name).symlink_to(source)
    urls = "".join(f'{k} = "{v}"\n' for k, v in emu.base_urls.items())
    config = folder / "batch.toml"
    config.write_text(
        f'[run]\nname = "chaos"\nprovider = "pixverse"\noutput = "out"\nmax_jobs = 4\n[run.base_urls]\n{urls}'
        f'[defaults]\nsync_mode = "cut"\n\n' + "\n".join(job.toml() for job in jobs),
        encoding="utf-8",
    )
    return config


def emulator() -> Emulator:
    return Emulator(EmulatorSettings(latency_s=LATENCY_S, jitter_s=0.4))


@dataclass(frozen=True)
class Reference:
    needed: frozenset[Segment]
    files: dict[str, tuple[str, int]]


def reference_run(folder: Path, inputs: Inputs, jobs: tuple[BatchJob, ...]) -> Reference:
    """The same batch, no faults, no kills: what every chaos round must deliver, byte for byte."""
    with emulator() as emu:
        config = write_batch(folder, inputs, jobs, emu)
        ran = lipsync_run(config, emu, None)
    if ran.returncode != 0:
        raise SystemExit(f"chaos: the clean reference run failed (exit {ran.returncode}):\n{ran.stderr[-3000:]}")
    out = folder / "out"
    return Reference(frozenset(row.seg for row in read_rows(out)), delivered_files(out, jobs))


# ---- faults -------------------------------------------------------------------------------------------


def arm(emu: Emulator, providers: tuple[str, ...], rng: random.Random) -> dict[str, str]:
    """This round's faults (each provider's counters are consumed as they fire); returns what was set."""
    armed = {}
    for provider in providers:
        refusals = rng.randint(1, 2) if provider == "pixverse" else rng.randint(2, 4)  # 500044, or a 429 storm
        emu.faults(provider).rate_limit_creates = refusals
        armed[f"{provider}.rate_limit_creates"] = str(refusals)
    lost, stalled, truncated = rng.choice(providers), rng.choice(providers), rng.choice(providers)
    how = rng.choice(("drop_after_create", "error_after_create"))
    setattr(emu.faults(lost), how, 1)
    emu.faults(stalled).stall_jobs, emu.faults(stalled).stall_s = 1, STALL_S
    emu.faults(truncated).truncate_downloads = 1
    armed.update(
        {f"{lost}.{how}": "1", f"{stalled}.stall_jobs": f"1 ({STALL_S:g} s)", f"{truncated}.truncate_downloads": "1"}
    )
    return armed


# ---- the rounds ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Figures summed over the rounds."""

    kills: int = 0
    hits: Counter = field(default_factory=Counter)  # named moment -> kills there
    random_landed: Counter = field(default_factory=Counter)  # job stage -> wall-clock kills that found a job there
    rounds: int = 0
    needed: int = 0
    accepted: int = 0
    lost_to_faults: int = 0
    lost_to_kills: int = 0
    adopted: int = 0
    jobs: int = 0
    delivered_before_resubmit: int = 0
    delivered: int = 0
    uncertain: Counter = field(default_factory=Counter)  # (reason, provider) -> segments
    files: int = 0
    identical: int = 0
    checksums_ok: int = 0
    refusals: int = 0
    violations: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ChaosSettings:
    kills: int
    seed: int
    jobs: tuple[BatchJob, ...] = BATCH


def play_round(
    number: int,
    folder: Path,
    inputs: Inputs,
    ref: Reference,
    settings: ChaosSettings,
    tally: Tally,
    rng: random.Random,
    say,
) -> None:
    providers = tuple(dict.fromkeys(job.provider for job in settings.jobs))
    with emulator() as emu:
        armed = arm(emu, providers, rng)
        config = write_batch(folder, inputs, settings.jobs, emu)
        out = folder / "out"
        kills, killed, last = [], 0, None
        while tally.kills < settings.kills and killed < KILLS_PER_ROUND:
            kill = choose_kill(view_of(read_rows(out), read_stages(out), ref.needed), tally.hits, rng)
            if kill is None:
                break
            if kill.point == "backoff":  # a refusal to back off from
                for provider in providers:
                    emu.faults(provider).rate_limit_creates = max(1, emu.faults(provider).rate_limit_creates)
            ran = lipsync_run(config, emu, kill)
            if not ran.killed:
                last = ran
                kills.append(f"{kill} missed: the run ended first (exit {ran.returncode})")
                break
            tally.kills += 1
            killed += 1
            kills.append(str(kill))
            if kill.point:
                tally.hits[kill.point] += 1
            else:
                landed = view_of(read_rows(out), read_stages(out), ref.needed).stages
                tally.random_landed.update(set(landed) - {"uncertain", "failed"})
        say(f"round {number}: kills {', '.join(kills) or 'none'}; faults {armed}")
        last = last or lipsync_run(config, emu, None)
        _complete(number, out, emu, ref, settings, tally, last, providers, say)
        tally.refusals += sum(1 for row in read_rows(out) if row.state == "refused")


def _complete(
    number: int,
    out: Path,
    emu: Emulator,
    ref: Reference,
    settings: ChaosSettings,
    tally: Tally,
    last: Ran,
    providers: tuple[str, ...],
    say,
) -> None:
    """Run the round to completion, resubmitting only legitimate uncertain creates, then audit it."""
    summary = last.summary()
    violations = (
        []
        if summary is not None
        else [f"`lipsync run` printed no summary (exit {last.returncode}): {last.stderr[-1500:]}"]
    )
    summary = summary or {"jobs": [], "uncertain": []}
    legit, illegit = _judge_uncertain_entries(summary["uncertain"], read_rows(out), snapshot(emu, providers), tally)
    violations += [reason for _, reason in illegit]
    violations += [
        f"{j['id']} ended {j['stage']}: {j['error']}"
        for j in summary["jobs"]
        if j["stage"] not in ("done", "uncertain")
    ]
    tally.delivered_before_resubmit += sum(j["stage"] == "done" for j in summary["jobs"])
    held = {job for job, _ in illegit}
    if legit - held:
        for name in providers:  # a fault still armed (its create was killed first) must not fire on the resubmit
            emu.faults(name).clear()
        again = lipsync_run(
            out.parent / "batch.toml", emu, None, "--resubmit-uncertain", "--only", ",".join(sorted(legit - held))
        )
        if again.returncode != 0:
            violations.append(f"--resubmit-uncertain exited {again.returncode}: {again.stderr[-1500:]}")
    books = account(set(ref.needed), read_rows(out), snapshot(emu, providers))
    stages = read_stages(out)
    delivered = [job.id for job in settings.jobs if stages.get(job.id) == "done"]
    violations += [
        f"{job.id} not delivered ({stages.get(job.id)})"
        for job in settings.jobs
        if job.id not in delivered and job.id not in held
    ]
    differ = compare_finals(ref.files, delivered_files(out, settings.jobs))
    checks_ok, checks_said = checksums_pass(out)
    violations += [*books.violations, *differ]
    violations += [] if checks_ok else [f"sha256sum -c checksums.sha256: {checks_said}"]
    violations += [f"left half-written: {p.relative_to(out)}" for p in out.rglob("*.part*")]
    _add_round(tally, books, len(settings.jobs), len(delivered), len(ref.files), len(differ), checks_ok)
    tally.violations += [f"round {number}: {v}" for v in violations]
    say(
        f"round {number}: {books.accepted} creates accepted for {books.needed} segments "
        f"(+{books.lost_to_faults + books.lost_to_kills} lost answers, {books.adopted} adopted); "
        f"{len(delivered)}/{len(settings.jobs)} delivered; {len(summary['uncertain'])} uncertain before "
        f"resubmitting; {len(ref.files) - len(differ)}/{len(ref.files)} files identical; "
        f"checksums {'ok' if checks_ok else 'FAIL'}"
    )


def _judge_uncertain_entries(
    entries: list[dict], rows: list[CreateRow], jobs: list[EmuJob], tally: Tally
) -> tuple[set[str], list[tuple[str, str]]]:
    """The jobs whose uncertain segments may be resubmitted, and (job, reason) for those that may not."""
    attribution = attribute(rows, jobs)
    provider = {row.seg: row.provider for row in rows}
    legit, illegit = set(), []
    for entry in entries:
        seg = (entry["job"], entry["segment"])
        verdict = judge_uncertain(seg, rows, attribution)
        tally.uncertain[(verdict.reason if verdict.legit else "not legitimate", provider.get(seg))] += 1
        if verdict.legit:
            legit.add(entry["job"])
        else:
            illegit.append((entry["job"], verdict.reason))
    return legit, illegit


def _add_round(
    tally: Tally, books: Accounts, jobs: int, delivered: int, files: int, differ: int, checks_ok: bool
) -> None:
    tally.rounds += 1
    tally.needed += books.needed
    tally.accepted += books.accepted
    tally.lost_to_faults += books.lost_to_faults
    tally.lost_to_kills += books.lost_to_kills
    tally.adopted += books.adopted
    tally.jobs += jobs
    tally.delivered += delivered
    tally.files += files
    tally.identical += files - differ
    tally.checksums_ok += checks_ok


def figures(tally: Tally, settings: ChaosSettings, seconds: float) -> list[str]:
    named = ", ".join(f"{m} {tally.hits[m]}" for m in MOMENTS)
    landed = ", ".join(f"{stage} {n}" for stage, n in tally.random_landed.most_common()) or "nothing"
    uncertain = sum(tally.uncertain.values())
    reasons = "; ".join(f"{n}: {reason} ({where})" for reason, n, where in _by_reason(tally.uncertain)) or "none"
    return [
        f"chaos: seed {settings.seed}, {tally.kills} SIGKILLs over {tally.rounds} rounds in {seconds:.0f} s",
        f"  named kill points: {named}; at random moments: {tally.kills - sum(tally.hits.values())} "
        f"(they found jobs at: {landed})",
        f"  refused creates (500044 / 429) recorded: {tally.refusals}",
        f"  creates accepted by the emulator: {tally.accepted} = {tally.needed} segments needed + "
        f"{tally.lost_to_faults + tally.lost_to_kills} accepted creates whose answer was lost "
        f"({tally.lost_to_faults} dropped by an emulator fault, {tally.lost_to_kills} cut off by a kill)",
        f"  lost answers found again by replyRef (useapi) and adopted, not re-created: {tally.adopted}",
        f"  jobs delivered: {tally.delivered} of {tally.jobs} ({tally.delivered_before_resubmit} before "
        f"--resubmit-uncertain)",
        f"  segments left uncertain: {uncertain} ({reasons})",
        f"  files identical to the clean run's (sha256): {tally.identical} of {tally.files}",
        f"  sha256sum -c checksums.sha256: passed in {tally.checksums_ok} of {tally.rounds} rounds",
    ]


def _by_reason(counts: Counter) -> list[tuple[str, int, str]]:
    """(reason, segments, "provider n, …") from counts keyed by (reason, provider), the most frequent first."""
    reasons: dict[str, Counter] = {}
    for (reason, provider), n in counts.items():
        reasons.setdefault(reason, Counter())[provider] += n
    return sorted(
        (
            (reason, sum(by.values()), ", ".join(f"{p} {n}" for p, n in sorted(by.items())))
            for reason, by in reasons.items()
        ),
        key=lambda item: -item[1],
    )


def coverage_violations(tally: Tally, settings: ChaosSettings) -> list[str]:
    if settings.kills < COVERAGE_FROM:
        return []
    return [
        f"the kill point {m!r} was hit {tally.hits[m]} times (at least {MIN_HITS} wanted)"
        for m in MOMENTS
        if tally.hits[m] < MIN_HITS
    ]


def run_chaos(settings: ChaosSettings, say=print) -> Tally:
    rng = random.Random(settings.seed)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="lipsync-chaos-") as tmp:
        root = Path(tmp)
        inputs = make_inputs(root / "media")
        ref = reference_run(root / "reference", inputs, settings.jobs)
        say(f"clean run: {len(settings.jobs)} jobs, {len(ref.needed)} segments, {len(ref.files)} delivered files")
        number = 0
        while tally.kills < settings.kills or tally.rounds == 0:
            number += 1
            try:
                play_round(number, root / f"round-{number}", inputs, ref, settings, tally, rng, say)
            except Hang as hang:
                tally.violations.append(f"round {number}: {hang}")
                break
    tally.violations += coverage_violations(tally, settings)
    return tally


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up (the child, the temp dir) like Ctrl-C
    settings = ChaosSettings(
        kills=int(os.environ.get("CHAOS_KILLS", "100")),
        seed=int(os.environ.get("CHAOS_SEED", random.SystemRandom().randrange(10**6))),
    )
    started = time.monotonic()
    tally = run_chaos(settings, say=lambda line: print(line, flush=True))
    print("\n".join(figures(tally, settings, time.monotonic() - started)))
    if tally.violations:
        print(f"chaos: FAILED, {len(tally.violations)} violations:", *tally.violations, sep="\n  ")
        sys.exit(1)
    print("chaos: passed")


if __name__ == "__main__":
    main()
