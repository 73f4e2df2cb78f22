"""Batch throughput: 40 jobs through the emulator (20 s per job), max_jobs 8.

The ideal wall time is ceil(40 / 8) waves × 20 s, plus the conform work a job cannot overlap with
waiting (its own prepare before the first create, and its mux/verify/handoff after the last result).
Printed as a ratio of measured to ideal; the target is ≤ 1.10. Conform time is measured in the same
run from the ledger's stage timings. `BENCH_BATCH_JOBS`, `BENCH_BATCH_LATENCY` shrink it for a quick look.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench._media import tiny_clip
from pipeline.run.config import load_config
from pipeline.run.ledger import open_run_ledger
from pipeline.run.progress import Progress
from pipeline.run.runner import RunOptions, run_batch

JOBS = int(os.environ.get("BENCH_BATCH_JOBS", "40"))
LATENCY_S = float(os.environ.get("BENCH_BATCH_LATENCY", "20.0"))
MAX_JOBS = 8
PROVIDER = os.environ.get("BENCH_BATCH_PROVIDER", "fal")


def _tiny_media(folder: Path) -> tuple[Path, Path]:
    return tiny_clip(folder, seconds=2, fps=25, words="Two seconds of words to lip-sync in the benchmark.")


def _config(folder: Path) -> Path:
    jobs = "".join(f'\n[[job]]\nid = "job-{i:03d}"\nvideo = "clip.mp4"\naudio = "voice.wav"\n' for i in range(JOBS))
    path = folder / "bench.toml"
    path.write_text(
        f'[run]\nname = "bench"\nprovider = "{PROVIDER}"\noutput = "out"\nmax_jobs = {MAX_JOBS}\n'
        f"[run.rehearse]\nlatency_s = {LATENCY_S}\n[run.poll]\ninterval_s = 0.5\nmax_interval_s = 1.0\n"
        f'[defaults]\nsync_mode = "cut"\n{jobs}',
        encoding="utf-8",
    )
    return path


def _stage_seconds(run_dir: Path) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {}
    ledger = open_run_ledger(run_dir)  # SQLite, or the PostgreSQL ledger its pointer names (bench/cluster.py)
    try:
        for job in ledger.jobs():
            for t in ledger.stage_times(job.job_id):
                if t.finished_at is not None:
                    seconds.setdefault(t.stage, []).append(t.finished_at - t.started_at)
    finally:
        ledger.close()
    return seconds


def conform_seconds(run_dir: Path) -> tuple[float, float]:
    """Mean seconds per job of prepare and of mux/verify/handoff, from the run's ledger."""
    stages = _stage_seconds(run_dir)
    prepare = stages.get("prepare", [0.0])
    finish = [
        sum(parts) for parts in zip(*(stages.get(s, []) for s in ("mux", "verify", "handoff")), strict=False)
    ] or [0.0]
    return statistics.mean(prepare), statistics.mean(finish)


def main() -> None:
    logging.getLogger("lipsync").setLevel(logging.ERROR)  # the per-job conform warnings are not the point here
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as tmp:
        folder = Path(tmp)
        _tiny_media(folder)
        config = load_config(_config(folder))
        start = time.monotonic()
        summary = run_batch(config, RunOptions(rehearse=True), Progress())
        wall = time.monotonic() - start
        failed = [o.job_id for o in summary.outcomes if o.exit_code != 0]
        stages = _stage_seconds(config.output)
        prepare_s, finish_s = conform_seconds(config.output)
    prepare = stages.get("prepare", [0.0])
    finish = [
        sum(parts) for parts in zip(*(stages.get(s, []) for s in ("mux", "verify", "handoff")), strict=False)
    ] or [0.0]
    conform = prepare_s + finish_s
    ideal = math.ceil(JOBS / MAX_JOBS) * LATENCY_S + conform
    print(
        f"jobs {JOBS}, provider {PROVIDER}, emulator latency {LATENCY_S:g} s, max_jobs {MAX_JOBS}"
        f"{f', FAILED: {failed}' if failed else ''}"
    )
    print(
        f"conform per job: prepare {prepare_s:.2f} s + mux/verify/handoff "
        f"{finish_s:.2f} s (all jobs: {sum(prepare) + sum(finish):.1f} s of CPU-pool time)"
    )
    print(f"wall {wall:.1f} s, ideal {ideal:.1f} s, ratio {wall / ideal:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
