"""Provider client benchmarks, against the emulator.

1. Done detection: on the same emulator jobs of L..3L s (default 20-60 s), created at a steady pace over
   3L s so that later jobs can learn from earlier ones, three watchers per job at once:
   - "learned": what the pipeline does now: fal follows its status stream; the others poll on the
     schedule that densifies around the completion window learned from the jobs already finished (one
     adapter per provider shares its `DurationEstimator`, as in a run), or the documented ~34 s before;
   - "adaptive": the previous schedule alone (2-3 s growing to 10 s; polling only, fal included);
   - "fixed 15 s": the providers' sample scripts.
   Reported per provider and watcher: HTTP requests per job (and for the jobs over 50 s) and the delay
   from the moment the job is done in the emulator to the moment `wait_for_job` returns it.
2. Memory: peak RSS of a `lipsync submit` child process sending a ~50 MB video to AI/ML API as a data URI
   (target <= 150 MB), next to the same command with a tiny video. Only the client is measured: the
   emulator runs in this process, the client in a child whose own usage os.wait4 reports.

`BENCH_PROVIDERS_JOBS` (default 96, spread over the four providers: fewer make the means noisy) and
`BENCH_PROVIDERS_LATENCY` (default 20: jobs take L..3L s) shrink it; `BENCH_PROVIDERS_ONLY=polling` (or
`memory`) runs one part.
"""

from __future__ import annotations

import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench._media import tiny_clip
from pipeline.emulator import Emulator, EmulatorSettings
from pipeline.providers import (
    JobHandle,
    JobRequest,
    PollPolicy,
    Provider,
    get_provider,
    make_client,
    provider_class,
    wait_for_job,
)
from pipeline.providers.http import Accepted, Refused
from pipeline.providers.poll import DurationEstimator

JOBS = int(os.environ.get("BENCH_PROVIDERS_JOBS", "96"))
LATENCY_S = float(os.environ.get("BENCH_PROVIDERS_LATENCY", "20.0"))
PROVIDERS = ("pixverse", "aimlapi", "useapi", "fal")
FIXED = PollPolicy(initial=15.0, factor=1.0, maximum=15.0, timeout=600.0)
WATCHERS = ("learned", "adaptive", "fixed 15 s")
LONG_JOB_S = 2.5 * LATENCY_S  # "a 60 s job" at the default latency
TARGET_DELAY_S = {"fal": 0.5}  # the others: 2.5 s, with at most 20 requests for a 60 s job
TARGET_DELAY_OTHERS_S, TARGET_REQUESTS = 2.5, 20
BIG_VIDEO_BYTES = 49_900_000
RSS_TARGET_MB = 150


@dataclass
class Watch:
    watcher: str
    provider: str
    duration: float
    requests: int = 0
    delay: float = 0.0


def _clip(folder: Path) -> tuple[Path, Path]:
    return tiny_clip(folder, seconds=1, fps=15, words="One second of words.")


def _padded_copy(src: Path, dst: Path, total: int) -> Path:
    """`src` (an MP4) followed by one `free` box filling it up to `total` bytes: still a valid MP4."""
    data = src.read_bytes()
    pad = total - len(data)
    with open(dst, "wb") as f:
        f.write(data)
        f.write(struct.pack(">I", pad) + b"free")
        chunk = b"\0" * (1 << 20)
        left = pad - 8
        while left > 0:
            f.write(chunk[:left])
            left -= len(chunk)
    return dst


def _adapter(emu: Emulator, name: str, watcher: str, client, durations: DurationEstimator) -> Provider:
    learned = replace(provider_class(name).default_poll, timeout=600.0)
    policy = {"learned": learned, "adaptive": replace(learned, expected_s=None), "fixed 15 s": FIXED}[watcher]
    provider = get_provider(
        name,
        credential=emu.credentials()[name],
        base_urls=emu.base_urls,
        client=client,
        poll=policy,
        durations=durations if watcher == "learned" else DurationEstimator(),
    )
    if watcher != "learned":
        provider.streams_status = False  # polling only, as before the status stream
    return provider


def _create(emu: Emulator, name: str, video: Path, audio: Path) -> JobHandle:
    """One accepted job; a refusal (useapi's account at maxJobs) is sent again a second later."""
    with get_provider(name, credential=emu.credentials()[name], base_urls=emu.base_urls) as creator:
        submission = creator.submission(JobRequest(video, audio))
        while isinstance(outcome := creator.send_create(submission), Refused):
            time.sleep(1.0)
        if not isinstance(outcome, Accepted):
            raise RuntimeError(f"{name}: the emulator lost a create: {outcome}")
        return creator.handle_from(outcome.body, time.time())


def _watch(
    emu: Emulator, name: str, handle: JobHandle, watcher: str, durations: DurationEstimator, out: list[Watch]
) -> None:
    sent: list = []
    client = make_client(event_hooks={"request": [sent.append]})
    with _adapter(emu, name, watcher, client, durations) as provider:
        wait_for_job(provider, handle)
        noticed = time.monotonic()
    job = next(j for j in emu.jobs(name) if str(j.job_id) == handle.job_id)
    done = job.created_at + job.queue_s + job.run_s
    out.append(Watch(watcher, name, job.queue_s + job.run_s, len(sent), noticed - done))


def bench_polling(folder: Path) -> None:
    video, audio = _clip(folder)
    # the useapi account runs as many jobs as come (its capacity is not what is measured here)
    settings = EmulatorSettings(
        latency_s=LATENCY_S,
        jitter_s=2 * LATENCY_S,
        queue_s=0.0,
        output_short_side=96,
        useapi_max_jobs=JOBS,
        render_workers=2,
    )
    pace = 3 * LATENCY_S / JOBS
    with Emulator(settings) as emu:
        learned = {name: DurationEstimator() for name in PROVIDERS}
        watches: list[Watch] = []
        threads = []
        start = time.monotonic()
        for i in range(JOBS):
            name = PROVIDERS[i % len(PROVIDERS)]
            handle = _create(emu, name, video, audio)
            for watcher in WATCHERS:
                t = threading.Thread(target=_watch, args=(emu, name, handle, watcher, learned[name], watches))
                t.start()
                threads.append(t)
            time.sleep(max(0.0, start + (i + 1) * pace - time.monotonic()))
        for t in threads:
            t.join()
        wall = time.monotonic() - start
    print(
        f"done detection: {JOBS} emulator jobs of {LATENCY_S:g}-{3 * LATENCY_S:g} s created over "
        f"{3 * LATENCY_S:g} s, each watched three ways at once ({wall:.0f} s wall)"
    )
    long_label = f"jobs>{LONG_JOB_S:g}s"
    print(
        f"  {'provider':<9}{'watcher':<12}{'req/job':>8}{long_label + ' req mean/max':>22}"
        f"{'delay mean':>11}{'median':>8}{'max':>7}"
    )
    failed = []
    for name in PROVIDERS:
        for watcher in WATCHERS:
            ws = [w for w in watches if w.provider == name and w.watcher == watcher]
            delays = [w.delay for w in ws]
            long_requests = [w.requests for w in ws if w.duration >= LONG_JOB_S] or [0]
            print(
                f"  {name:<9}{watcher:<12}{statistics.mean(w.requests for w in ws):8.1f}"
                f"{statistics.mean(long_requests):17.1f}{max(long_requests):5d}"
                f"{statistics.mean(delays):10.2f}s{statistics.median(delays):7.2f}s{max(delays):6.2f}s"
            )
            if watcher == "learned":
                target = TARGET_DELAY_S.get(name, TARGET_DELAY_OTHERS_S)
                if statistics.mean(delays) > target or statistics.mean(long_requests) > TARGET_REQUESTS:
                    failed.append(name)
    verdict = f"OVER TARGET: {', '.join(failed)}" if failed else "ok"
    print(
        f"  targets (learned): fal <= 0.5 s mean; others <= {TARGET_DELAY_OTHERS_S:g} s mean and <= "
        f"{TARGET_REQUESTS} requests a job over {LONG_JOB_S:g} s on average: {verdict}"
    )


def _child_peak_rss_mb(argv: list[str], env: dict[str, str], log: Path) -> float:
    """Run `argv` and return the peak RSS of that process alone (os.wait4 reports that one child's usage;
    the emulator's own ffmpeg children, in this process, do not count)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"submit failed ({proc.returncode}): {log.read_text()[-400:]}")
    return usage.ru_maxrss / 1024


def bench_memory(folder: Path) -> None:
    video, audio = _clip(folder)
    big = _padded_copy(video, folder / "big.mp4", BIG_VIDEO_BYTES)
    lipsync = str(Path(sys.executable).with_name("lipsync"))
    with Emulator(EmulatorSettings(latency_s=0.5, output_short_side=96)) as emu:
        env = {**os.environ, **emu.env()}

        def submit(v: Path) -> list[str]:
            return [
                lipsync,
                "submit",
                "--provider",
                "aimlapi",
                "--video",
                str(v),
                "--audio",
                str(audio),
                "--out",
                str(folder / f"out-{v.stem}.mp4"),
                "--poll-interval",
                "0.2",
            ]

        small_mb = _child_peak_rss_mb(submit(video), env, folder / "small.log")
        t = time.monotonic()
        big_mb = _child_peak_rss_mb(submit(big), env, folder / "big.log")
        seconds = time.monotonic() - t
    verdict = "ok" if big_mb <= RSS_TARGET_MB else "OVER TARGET"
    print("memory: lipsync submit to aimlapi, video as a data URI (client process only)")
    print(f"  tiny video:            peak RSS {small_mb:6.1f} MB")
    print(
        f"  {BIG_VIDEO_BYTES / 1e6:.1f} MB video:        peak RSS {big_mb:6.1f} MB  "
        f"(target <= {RSS_TARGET_MB} MB: {verdict}; {seconds:.1f} s end to end)"
    )


def main() -> None:
    parts = {"memory": bench_memory, "polling": bench_polling}
    chosen = [part for part in os.environ.get("BENCH_PROVIDERS_ONLY", "").split(",") if part in parts] or list(parts)
    with tempfile.TemporaryDirectory(prefix="bench-providers-") as tmp:
        for part in chosen:
            parts[part](Path(tmp))


if __name__ == "__main__":
    main()
