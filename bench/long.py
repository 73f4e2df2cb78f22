"""Long footage (issue 13, item 9): split + conform against one hand-written transcode, the stitch, and the
encoder settings chosen by measured quality per second. Every figure is a ratio against a baseline measured in
the same run, so a busy machine moves both sides.

1. A 1080p 25 fps talking source of BENCH_LONG_SECONDS (default 600: ten minutes), generated once into
   <tmp>/lipsync-bench/long. `prepare` (split at pauses, every segment's picture conformed, the voice normalized
   once and cut at sample-exact points; the face pre-flight left out: it is analysis, not conform) against one
   hand-written ffmpeg command transcoding the whole file with the same encoder settings (video and the voice as
   WAV). Target: ratio <= 1.15.
2. Stitching the returned segments (here: the prepared pictures with their voices, as a provider returns them)
   into the final, as delivery does (each voice fitted to its segment, then one stitch): target <= 5 % of that
   transcode's time. Delivered DELIVERIES times, each in a fresh process (nothing probed yet, as when a
   resumed run delivers); the median counts.
3. A 4K 60 fps HEVC 10-bit clip (BENCH_UHD_SECONDS, default 8): conform time at each x264 preset (CRF 20)
   under the bitrate cap of a full 30 s segment, against the floor (ffmpeg decoding and scaling it to the same
   size, nothing encoded), and the output's SSIM against the source put through the conform's own picture
   chain, stored losslessly (the encoder's loss). Target: <= 1.8x the floor at SSIM >= 0.98.
CPU time (ffmpeg's user+sys) is the figure that survives a shared machine; wall time is printed beside it.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import ffmpeg

from pipeline.demo import make_long_clip
from pipeline.ffmpeg import compile_stream, ffmpeg_exe, run_ffmpeg
from pipeline.fsutil import atomic_output
from pipeline.limits import Limits, load_limits
from pipeline.prepare import PrepareRequest, prepare
from pipeline.stages.conform_video import VideoOptions, VideoPlan, bt709_picture, execute_video, plan_video
from pipeline.stages.mux import join_results
from pipeline.stages.probe import probe_video
from pipeline.stages.sync import max_job_seconds

from .conform import Timing, timed

CACHE = Path(tempfile.gettempdir()) / "lipsync-bench" / "long"
LONG_SECONDS = float(os.environ.get("BENCH_LONG_SECONDS", "600"))
UHD_SECONDS = float(os.environ.get("BENCH_UHD_SECONDS", "8"))
SPLIT_TARGET = 1.15
STITCH_TARGET = 0.05
FLOOR_TARGET = 1.8
SSIM_TARGET = 0.98
DELIVERIES = 3
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast")


def _source(seconds: float) -> Path:
    """The long talking source: testsrc2 1080p with sentences and pauses as its sound (made once, cached)."""
    path = CACHE / f"talk-1080p-{seconds:g}s.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"   generating {path.name} ...", flush=True)
    return make_long_clip(path, seconds, size="1920x1080", crf=23, preset="ultrafast")


def _uhd(seconds: float) -> Path:
    """4K 60 fps HEVC Main 10: one second encoded, looped by stream copy (a 4K x265 encode is slow)."""
    path = CACHE / f"uhd60-hevc10-{seconds:g}s.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"   generating {path.name} ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as scratch:
        second = Path(scratch) / "one.mp4"
        run_ffmpeg(
            [
                ffmpeg_exe(),
                "-hide_banner",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=s=3840x2160:r=60:d=1",
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error",
                "-pix_fmt",
                "yuv420p10le",
                "-tag:v",
                "hvc1",
                str(second),
            ],
            what="one second of 4K60 HEVC 10-bit",
        )
        with atomic_output(path) as tmp:
            run_ffmpeg(
                [
                    ffmpeg_exe(),
                    "-hide_banner",
                    "-y",
                    "-stream_loop",
                    str(max(0, round(seconds) - 1)),
                    "-i",
                    str(second),
                    "-c",
                    "copy",
                    "-t",
                    f"{seconds:g}",
                    "-f",
                    "mp4",
                    str(tmp),
                ],
                what="looping it",
            )
    return path


def _row(what: str, t: Timing, base: Timing | None = None) -> None:
    ratio = f"  wall x{t.wall / base.wall:.3f}  cpu x{t.cpu / base.cpu:.3f}" if base else ""
    print(f"   {what:<44} wall {t.wall:8.2f} s  cpu {t.cpu:8.2f} s{ratio}", flush=True)


def hand_written(
    src: Path, dst_video: Path, dst_voice: Path, width: int, height: int, opts: VideoOptions, maxrate: int, bufsize: int
) -> list[str]:
    """One command a person would type for the same media: the whole picture at the segments' settings, and
    the voice as 48 kHz WAV."""
    return [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostats",
        "-y",
        "-i",
        str(src),
        "-map",
        "0:v:0",
        "-vf",
        f"scale={width}:{height},setsar=1,format=yuv420p",
        "-c:v",
        "libx264",
        "-profile:v",
        "high",
        "-preset",
        opts.preset,
        "-crf",
        str(opts.crf),
        "-maxrate",
        str(maxrate),
        "-bufsize",
        str(bufsize),
        "-an",
        str(dst_video),
        "-map",
        "0:a:0",
        "-c:a",
        "pcm_s16le",
        "-ar",
        "48000",
        str(dst_voice),
    ]


def bench_split(out: Path) -> tuple[float, float]:
    src = _source(LONG_SECONDS)
    limits = load_limits("fal")
    first = plan_video(probe_video(src), limits, VideoOptions(end=29.0, keep_audio=False))
    assert first.maxrate and first.bufsize and first.width and first.height
    argv = hand_written(
        src, out / "hand.mp4", out / "hand.wav", first.width, first.height, VideoOptions(), first.maxrate, first.bufsize
    )
    hand = timed(lambda: run_ffmpeg(argv, what="the hand-written transcode"))
    result = None

    def split() -> None:
        nonlocal result
        result = prepare(PrepareRequest(video=src, provider="fal", face=None), out / "segments")

    mine = timed(split)
    assert result is not None
    print(
        f"   {LONG_SECONDS:g} s of 1080p, {len(result.segments)} segments, cut at: "
        + ", ".join(str(s.cut_reason).split(" (")[0].split(",")[0] for s in result.segments[:-1])
    )
    _row("hand-written transcode of the whole file", hand)
    _row("lipsync prepare (split + conform)", mine, hand)

    returned = []
    for seg in result.segments:  # what a provider returns: the picture with the voice it was given, in AAC
        dst = out / f"returned-{seg.index}.mp4"
        run_ffmpeg(
            [
                ffmpeg_exe(),
                "-hide_banner",
                "-y",
                "-i",
                str(seg.video),
                "-i",
                str(seg.audio),
                "-map",
                "0:v",
                "-map",
                "1:a",
                "-c:v",
                "copy",
                "-c:a",
                "aac",
                str(dst),
            ],
            what="a returned segment",
        )
        returned.append((dst, seg.audio))

    deliveries = [_in_a_fresh_process(_deliver, returned, out / f"delivery-{i}") for i in range(DELIVERIES)]
    for i, delivery in enumerate(deliveries, 1):
        _row(f"align each voice + stitch into final.mp4 ({i})", delivery, hand)
    return mine.cpu / hand.cpu, statistics.median(d.cpu for d in deliveries) / hand.cpu


def _deliver(returned: list[tuple[Path, Path]], work: Path) -> Timing:
    """The final from the returned segments and their voices, as delivery makes it (`run.steps.deliver_job`)."""
    work.mkdir()
    timing = timed(lambda: join_results([v for v, _ in returned], [a for _, a in returned], work, "final.mp4"))
    shutil.rmtree(work)
    return timing


def _in_a_fresh_process(fn: Callable[..., Timing], *args: object) -> Timing:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        return fresh.submit(fn, *args).result()


_SSIM = re.compile(r"All:([0-9.]+)")


def conform_reference(src: Path, plan: VideoPlan, dst: Path) -> Path:
    """`src` through the conform's own picture chain (`bt709_picture`: scale, matrix, range, 8-bit 4:2:0),
    stored losslessly: what the encoder was given, so SSIM against it measures the encoder's loss alone.
    (Scaling the source another way costs SSIM by itself: a bicubic scale without the colour arguments scored
    0.966 against this chain with nothing encoded, which capped every preset near 0.974.)"""
    picture = bt709_picture(ffmpeg.input(str(src))["v:0"], plan)
    out = picture.output(str(dst), vcodec="libx264", qp=0, preset="ultrafast", an=None)
    run_ffmpeg(compile_stream(out.global_args("-hide_banner", "-nostats", "-y")), what="the lossless reference")
    return dst


def ssim(reference: Path, distorted: Path) -> float:
    """SSIM (all planes) of `distorted` against `reference`, frame by frame at the same size."""
    argv = [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(distorted), "-i", str(reference), "-lavfi", "ssim"]
    text = subprocess.run([*argv, "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    return float(_SSIM.findall(text)[-1])


def segment_budget(seconds: float) -> Limits:
    """The limits with the byte limit scaled so that `seconds` of footage get the bitrate cap of a full
    segment: a short clip's own budget is several times looser than a 30 s job's, and a faster preset's
    weaker compression shows only under the tight one."""
    limits = load_limits()
    scaled = round(limits.video_max_bytes * seconds / max_job_seconds(limits))
    return load_limits(overrides={"video_max_bytes": scaled})


def bench_presets(out: Path) -> list[tuple[str, float, float]]:
    src = _uhd(UHD_SECONDS)
    limits = segment_budget(UHD_SECONDS)
    base = plan_video(probe_video(src), limits, VideoOptions(keep_audio=False))
    assert base.width and base.height and base.maxrate
    print(f"   capped at {base.maxrate / 1e6:.2f} Mbit/s, as a full {max_job_seconds(limits):g} s segment is")
    floor_argv = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostats",
        "-i",
        str(src),
        "-map",
        "0:v:0",
        "-vf",
        f"scale={base.width}:{base.height},format=yuv420p",
        "-f",
        "null",
        "-",
    ]
    floor = timed(lambda: run_ffmpeg(floor_argv, what="decode and scale"))
    _row(f"floor: decode + scale to {base.width}x{base.height}", floor)
    reference = conform_reference(src, base, out / "uhd-reference.mkv")
    rows = []
    for preset in PRESETS:
        opts = VideoOptions(keep_audio=False, preset=preset)
        dst = out / f"uhd-{preset}.mp4"
        t = timed(lambda opts=opts, dst=dst: execute_video(plan_video(probe_video(src), limits, opts), dst))
        quality = ssim(reference, dst)
        _row(f"conform, x264 {preset} CRF 20 (SSIM {quality:.4f})", t, floor)
        rows.append((preset, t.cpu / floor.cpu, quality))
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-long-") as scratch:
        out = Path(scratch)
        split, joined = bench_split(out)
        presets = bench_presets(out)
    print(f"   split + conform / hand-written transcode: x{split:.3f} (cpu; target <= {SPLIT_TARGET})")
    print(f"   stitch / hand-written transcode:          {joined:.1%} (cpu; target <= {STITCH_TARGET:.0%})")
    meeting = [p for p, ratio, q in presets if ratio <= FLOOR_TARGET and q >= SSIM_TARGET]
    for preset, ratio, quality in presets:
        print(f"   {preset:<10} x{ratio:.2f} the decode+scale floor, SSIM {quality:.4f}")
    print(f"   presets within x{FLOOR_TARGET} of the floor at SSIM >= {SSIM_TARGET}: {', '.join(meeting) or 'none'}")


if __name__ == "__main__":
    main()
