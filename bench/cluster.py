"""A batch on a local Dask cluster (2 worker processes, PostgreSQL ledger) against the same batch on this
machine alone, in the same session: 200 jobs, emulator latency 20 s, per-provider concurrency 16.

The ideal wall time of either is ceil(200 / 16) waves × 20 s plus the conform work a job cannot overlap
with waiting (its prepare before the first create, its mux/verify/handoff after the last result), measured
per run from its ledger. Printed as ratios of measured to ideal; the cluster's target is ≤ 1.15.
`BENCH_CLUSTER_JOBS`, `BENCH_CLUSTER_LATENCY` shrink it for a quick look.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.batch import _tiny_media, conform_seconds
from pipeline.run.cluster import local_cluster
from pipeline.run.config import load_config
from pipeline.run.progress import Progress
from pipeline.run.runner import RunOptions, run_batch

JOBS = int(os.environ.get("BENCH_CLUSTER_JOBS", "200"))
LATENCY_S = float(os.environ.get("BENCH_CLUSTER_LATENCY", "20"))
MAX_JOBS = 16
WORKERS = 2
THREADS = 24  # jobs a worker runs at once: 48 in all, the 16 provider slots and as many prepared or finishing
PROVIDER = "fal"


def _config(folder: Path, output: str, ledger: str | None) -> Path:
    jobs = "".join(f'\n[[job]]\nid = "job-{i:03d}"\nvideo = "clip.mp4"\naudio = "voice.wav"\n' for i in range(JOBS))
    path = folder / f"{output}.toml"
    path.write_text(
        f'[run]\nname = "{output}"\nprovider = "{PROVIDER}"\noutput = "{output}"\nmax_jobs = {MAX_JOBS}\n'
        + (f"ledger = {json.dumps(ledger)}\n" if ledger else "")
        + f"[run.rehearse]\nlatency_s = {LATENCY_S}\n[run.poll]\ninterval_s = 0.5\nmax_interval_s = 1.0\n"
        f'[defaults]\nsync_mode = "cut"\n{jobs}',
        encoding="utf-8",
    )
    return path


def _timed(config_path: Path, options: RunOptions) -> tuple[float, float, list[str]]:
    """Wall seconds, the ideal for this run, and the jobs that failed."""
    config = load_config(config_path)
    start = time.monotonic()
    summary = run_batch(config, options, Progress())
    wall = time.monotonic() - start
    prepare, finish = conform_seconds(config.output)
    ideal = math.ceil(JOBS / MAX_JOBS) * LATENCY_S + prepare + finish
    print(f"  conform per job: prepare {prepare:.2f} s + mux/verify/handoff {finish:.2f} s")
    return wall, ideal, [o.job_id for o in summary.outcomes if o.exit_code != 0]


def main() -> None:
    import pgserver

    logging.getLogger("lipsync").setLevel(logging.ERROR)
    print(f"jobs {JOBS}, provider {PROVIDER}, emulator latency {LATENCY_S:g} s, max_jobs {MAX_JOBS}")
    pg_folder = Path(tempfile.mkdtemp(prefix="lipsync-bench-pg-"))
    server = pgserver.get_server(pg_folder / "data", cleanup_mode="stop")
    try:
        with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as tmp:
            folder = Path(tmp)
            _tiny_media(folder)
            socket_dir = server.get_uri().rsplit("host=", 1)[1]
            ledger = f"postgresql://postgres@/postgres?host={socket_dir}"
            results = {}
            print("single machine (SQLite ledger):")
            results["single machine"] = _timed(_config(folder, "single", None), RunOptions(rehearse=True))
            with local_cluster(WORKERS, THREADS, "127.0.0.1", 0) as cluster:
                print(f"local cluster of {WORKERS} workers (PostgreSQL ledger):")
                options = replace(RunOptions(rehearse=True), cluster=cluster.address)
                results["cluster"] = _timed(_config(folder, "cluster", ledger), options)
        for name, (wall, ideal, failed) in results.items():
            target = " (target <= 1.15)" if name == "cluster" else ""
            print(
                f"{name}: wall {wall:.1f} s, ideal {ideal:.1f} s, ratio {wall / ideal:.3f}{target}"
                f"{f', FAILED: {failed}' if failed else ''}"
            )
    finally:
        server.cleanup()
        shutil.rmtree(pg_folder, ignore_errors=True)


if __name__ == "__main__":
    main()
