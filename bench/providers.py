"""Provider client benchmarks, against the emulator.

1. Polling: the adaptive poller (per-provider defaults) vs a fixed 15 s poll (the providers' sample
   scripts) on the same emulator jobs of 20-60 s, run concurrently: HTTP requests per job and
   done-detection latency (from the moment the job is done in the emulator to the moment the poller
   returns it).
2. Memory: peak RSS of a `lipsync submit` child process sending a ~50 MB video to AI/ML API as a data URI
   (target <= 150 MB), next to the same command with a tiny video. Only the client is measured: the
   emulator runs in this process, the client in a child whose own usage os.wait4 reports.

`BENCH_PROVIDERS_JOBS` (default 48: they run concurrently, and fewer make the latency means noisy) and `BENCH_PROVIDERS_LATENCY` (default 20: jobs take L..3L s) shrink it.
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
from pipeline.providers import DEFAULT_POLL, JobHandle, JobRequest, PollPolicy, get_provider, make_client, wait_for_job

JOBS = int(os.environ.get("BENCH_PROVIDERS_JOBS", 48))
LATENCY_S = float(os.environ.get("BENCH_PROVIDERS_LATENCY", 20.0))
PROVIDERS = ("pixverse", "aimlapi", "useapi", "fal")
FIXED = PollPolicy(initial=15.0, factor=1.0, maximum=15.0, timeout=600.0)
BIG_VIDEO_BYTES = 49_900_000
RSS_TARGET_MB = 150


@dataclass
class Watch:
    policy: str
    provider: str
    requests: int = 0
    latency: float = 0.0


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


def _watch(emu: Emulator, name: str, handle: JobHandle, label: str, policy: PollPolicy, done_at, out: list) -> None:
    sent: list = []
    client = make_client(event_hooks={"request": [sent.append]})
    with get_provider(name, base_urls=emu.base_urls, poll=policy, client=client) as provider:
        wait_for_job(provider, handle)
        detected = time.monotonic()
    out.append(Watch(label, name, len(sent), detected - done_at(name, handle)))


def bench_polling(folder: Path) -> None:
    video, audio = _clip(folder)
    settings = EmulatorSettings(latency_s=LATENCY_S, jitter_s=2 * LATENCY_S, queue_s=0.0, output_short_side=96,
                                useapi_max_jobs=8)
    with Emulator(settings) as emu:
        os.environ.update(emu.env())

        def done_at(name: str, handle: JobHandle) -> float:
            job = next(j for j in emu.jobs(name) if str(j.job_id) == handle.job_id)
            return job.created_at + job.queue_s + job.run_s

        watches: list[Watch] = []
        threads = []
        start = time.monotonic()
        for i in range(JOBS):
            name = PROVIDERS[i % len(PROVIDERS)]
            with get_provider(name, base_urls=emu.base_urls) as creator:
                handle = creator.create(JobRequest(video, audio))
            adaptive = replace(DEFAULT_POLL[name], timeout=600.0)
            for label, policy in (("adaptive", adaptive), ("fixed 15 s", FIXED)):
                t = threading.Thread(target=_watch, args=(emu, name, handle, label, policy, done_at, watches))
                t.start()
                threads.append(t)
        for t in threads:
            t.join()
        wall = time.monotonic() - start
    print(f"polling: {JOBS} emulator jobs of {LATENCY_S:g}-{3 * LATENCY_S:g} s, each watched by both pollers "
          f"({wall:.0f} s wall)")
    for label in ("adaptive", "fixed 15 s"):
        ws = [w for w in watches if w.policy == label]
        lat = [w.latency for w in ws]
        print(f"  {label:<11} requests/job {statistics.mean(w.requests for w in ws):5.1f}   "
              f"done-detection latency mean {statistics.mean(lat):5.2f} s  median {statistics.median(lat):5.2f} s  "
              f"max {max(lat):5.2f} s")


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
            return [lipsync, "submit", "--provider", "aimlapi", "--video", str(v), "--audio", str(audio),
                    "--out", str(folder / f"out-{v.stem}.mp4"), "--poll-interval", "0.2"]

        small_mb = _child_peak_rss_mb(submit(video), env, folder / "small.log")
        t = time.monotonic()
        big_mb = _child_peak_rss_mb(submit(big), env, folder / "big.log")
        seconds = time.monotonic() - t
    verdict = "ok" if big_mb <= RSS_TARGET_MB else "OVER TARGET"
    print("memory: lipsync submit to aimlapi, video as a data URI (client process only)")
    print(f"  tiny video:            peak RSS {small_mb:6.1f} MB")
    print(f"  {BIG_VIDEO_BYTES / 1e6:.1f} MB video:        peak RSS {big_mb:6.1f} MB  "
          f"(target <= {RSS_TARGET_MB} MB: {verdict}; {seconds:.1f} s end to end)")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-providers-") as tmp:
        folder = Path(tmp)
        bench_memory(folder)
        bench_polling(folder)


if __name__ == "__main__":
    main()
