"""Video conform against the equivalent hand-written ffmpeg command, timed in the same run.

Cases (inputs generated once into <tmp>/lipsync-bench/conform, reused afterwards):
  4k60-hevc10   3840x2160 60 fps HEVC Main 10, 20 s        -> transcode to 1080p H.264
  1080p-25mbit  1920x1080 25 fps H.264 ~25 Mbit/s, 28 s    -> transcode under the 50 MB limit
  720p-ok       1280x720 H.264/AAC mp4, 10 s, compliant    -> stream copy, compared with transcoding it
Targets: conform / hand-written <= 1.05 for transcodes; transcoding the compliant file >= 20x the copy.
Times are wall clock and CPU (ffmpeg's user+sys); the CPU ratio is the one that survives a busy machine.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.ffmpeg import ffmpeg_exe, run_ffmpeg
from pipeline.limits import load_limits
from pipeline.stages.conform_video import VideoOptions, VideoPlan, execute_video, plan_video
from pipeline.stages.probe import probe_video

CACHE = Path(tempfile.gettempdir()) / "lipsync-bench" / "conform"
TRANSCODE_TARGET = 1.05
COPY_TARGET = 20.0


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float


def _cpu() -> float:
    """CPU seconds of this process (probe, plan) and of its finished children (ffmpeg)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object]) -> Timing:
    cpu, start = _cpu(), time.perf_counter()
    fn()
    return Timing(time.perf_counter() - start, _cpu() - cpu)


def _inputs() -> dict[str, Path]:
    """Generate the bench inputs once (this takes a few minutes the first time)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.media import make_video

    CACHE.mkdir(parents=True, exist_ok=True)
    specs = {
        "4k60-hevc10": (
            "4k60 hevc10.mp4",
            {"seconds": 20, "width": 3840, "height": 2160, "fps": 60, "vcodec": "libx265", "pix_fmt": "yuv420p10le"},
        ),
        "1080p-25mbit": (
            "1080p 25mbit.mp4",
            {
                "seconds": 28,
                "width": 1920,
                "height": 1080,
                "fps": 25,
                "grain": 12,
                "b": "25M",
                "maxrate": "27M",
                "bufsize": "25M",
            },
        ),
        "720p-ok": ("720p compliant.mp4", {"seconds": 10, "width": 1280, "height": 720, "fps": 30}),
    }
    paths = {}
    for name, (filename, spec) in specs.items():
        path = CACHE / filename
        if not path.exists():
            print(f"   generating {filename} ...", flush=True)
            make_video(path, **spec)
        paths[name] = path
    return paths


def hand_written(src: Path, dst: Path, plan: VideoPlan) -> list[str]:
    """What a person would type for the same result: one input, one -vf chain, the same encoder settings."""
    vf = [f"scale={plan.width}:{plan.height}"] if plan.scale else []
    vf += ["setsar=1", "format=yuv420p"]
    argv = [
        ffmpeg_exe(),
        "-hide_banner",
        "-y",
        "-t",
        f"{plan.duration}",
        "-i",
        str(src),
        "-map",
        "0:v:0",
        "-vf",
        ",".join(vf),
        "-c:v",
        "libx264",
        "-profile:v",
        "high",
        "-preset",
        plan.preset,
        "-crf",
        str(plan.crf),
        "-maxrate",
        str(plan.maxrate),
        "-bufsize",
        str(plan.bufsize),
    ]
    if plan.audio == "aac":
        argv += [
            "-map",
            "0:a:0",
            "-c:a",
            "aac",
            "-b:a",
            str(plan.audio_bitrate),
            "-ac",
            str(plan.audio_channels),
            "-ar",
            str(plan.audio_rate),
        ]
    return [*argv, "-movflags", "+faststart", str(dst)]


def ours(src: Path, dst: Path, opts: VideoOptions = VideoOptions()) -> None:
    """The whole stage as prepare runs it: probe, plan, execute (which measures and probes the output)."""
    execute_video(plan_video(probe_video(src), load_limits(), opts), dst)


def _row(name: str, what: str, t: Timing, base: Timing | None = None) -> None:
    ratio = f"  wall x{t.wall / base.wall:.3f}  cpu x{t.cpu / base.cpu:.3f}" if base else ""
    print(f"   {name:<14} {what:<26} wall {t.wall:7.2f} s  cpu {t.cpu:7.2f} s{ratio}", flush=True)


def bench_transcode(name: str, src: Path, out: Path) -> bool:
    plan = plan_video(probe_video(src), load_limits())
    assert plan.mode == "transcode", plan.decisions
    argv = hand_written(src, out / f"{name}.hand.mp4", plan)
    hand = timed(lambda: run_ffmpeg(argv, what=f"bench {name}"))
    mine = timed(lambda: ours(src, out / f"{name}.ours.mp4"))
    _row(name, "hand-written ffmpeg", hand)
    _row(name, "lipsync conform", mine, hand)
    size = (out / f"{name}.ours.mp4").stat().st_size
    print(f"   {name:<14} output {plan.width}x{plan.height}, {size / 1e6:.1f} MB (cap {plan.maxrate / 1e6:.1f} Mbit/s)")
    return mine.cpu / hand.cpu <= TRANSCODE_TARGET


def bench_copy(name: str, src: Path, out: Path) -> bool:
    forced = plan_video(probe_video(src), load_limits(), VideoOptions(force_transcode=True))
    argv = hand_written(src, out / f"{name}.hand.mp4", forced)
    transcode = timed(lambda: run_ffmpeg(argv, what=f"bench {name}"))
    copies = [timed(lambda: ours(src, out / f"{name}.ours.mp4")) for _ in range(5)]
    copy = sorted(copies, key=lambda t: t.wall)[len(copies) // 2]
    _row(name, "transcode (hand-written)", transcode)
    _row(name, "lipsync conform (copy)", copy)
    speedup = transcode.wall / copy.wall
    print(f"   {name:<14} copy is {speedup:.1f}x faster than transcoding (wall, median of 5)")
    return speedup >= COPY_TARGET


def main() -> None:
    inputs = _inputs()
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as scratch:
        out = Path(scratch)
        results = {
            "4k60-hevc10": bench_transcode("4k60-hevc10", inputs["4k60-hevc10"], out),
            "1080p-25mbit": bench_transcode("1080p-25mbit", inputs["1080p-25mbit"], out),
            "720p-ok": bench_copy("720p-ok", inputs["720p-ok"], out),
        }
    for name, ok in results.items():
        print(f"   {name:<14} {'meets' if ok else 'MISSES'} its target", flush=True)


if __name__ == "__main__":
    main()
