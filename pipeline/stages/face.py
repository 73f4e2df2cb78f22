"""Faces in a video, found with the models that ship inside the mediapipe wheel (no download at run time).

The pre-flight (`face_presence`) samples a conformed segment at a few frames per second and records how
often a face is there, how big the main one is and how many appear; `face_verdict` (pure) turns those
figures into warnings, or a refusal when the job requires a face. A lip-sync model given no face, or a face
too small to render lips on, still bills the job: this runs before any create.

Frames come from our ffmpeg as raw RGB through a pipe (`decode_frames`), already on a regular time grid
(`fps` filter) and scaled down: the detector works on a 192×192 picture and the landmark model on a
192×192 crop of the face, whatever the input size. `face_mesh`/`landmarks` serve the lip-sync score
(stages/mouth.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ffmpeg
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InputError
from ..ffmpeg import compile_stream, media_path
from ..native_log import filter_native_stderr
from .probe import probe_video

log = logging.getLogger("lipsync.face")

PREFLIGHT_FPS = 3.0
ANALYSIS_SHORT_SIDE = 480
"""Frames are scaled so their short side is at most this: a face of 10 % of it is still 48 px for the detector."""
MODEL = "mediapipe 0.10.21 face_detection full range (carried in the wheel)"


class FaceThresholds(BaseModel):
    """When a segment's face figures earn a warning (or, with require_face, a refusal)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_face_share: float = Field(0.5, ge=0, le=1)
    """Share of sampled frames that must show a face."""
    min_face_size: float = Field(0.1, gt=0, le=1)
    """The main face's longer side as a share of the frame's short side. Providers render at most 720 px on
    the short side, so 0.1 leaves a face of about 72 px: below that the mouth is a handful of pixels."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face's box in fractions of the frame (x, y: top left)."""

    x: float
    y: float
    w: float
    h: float

    def size(self, width: int, height: int) -> float:
        """The box's longer side in pixels over the frame's short side (see `FaceThresholds.min_face_size`)."""
        return max(self.w * width, self.h * height) / min(width, height)


@dataclass(frozen=True)
class FacePresence:
    """What the pre-flight saw in one segment."""

    segment: int
    sampled: int  # frames looked at
    with_face: int  # frames with at least one face
    max_faces: int  # most faces in one frame
    main_box: FaceBox | None  # the median box of the largest face per frame
    main_size: float | None  # main_box.size(...) of the frame
    width: int  # the analysed frame's size
    height: int
    fps: float = PREFLIGHT_FPS
    model: str = MODEL

    @property
    def share(self) -> float:
        return self.with_face / self.sampled if self.sampled else 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FacePresence:
        """The inverse of `to_dict` (a cached prepare's figures), up to its rounding."""
        box = d.get("main_box")
        return cls(
            segment=d["segment"],
            sampled=d["sampled"],
            with_face=d["with_face"],
            max_faces=d["max_faces"],
            main_box=FaceBox(**box) if box else None,
            main_size=d.get("main_size"),
            width=d["frame"][0],
            height=d["frame"][1],
            fps=d.get("fps", PREFLIGHT_FPS),
            model=d.get("model", MODEL),
        )

    def to_dict(self) -> dict[str, Any]:
        box = self.main_box
        return {
            "segment": self.segment,
            "sampled": self.sampled,
            "with_face": self.with_face,
            "face_share": round(self.share, 4),
            "max_faces": self.max_faces,
            "main_box": None if box is None else {k: round(v, 4) for k, v in vars(box).items()},
            "main_size": None if self.main_size is None else round(self.main_size, 4),
            "frame": [self.width, self.height],
            "fps": self.fps,
            "model": self.model,
        }


@dataclass(frozen=True)
class FaceVerdict:
    """The pre-flight's decision over every segment: warnings always; `refusal` only when a face is required."""

    warnings: tuple[str, ...] = ()
    refusal: str | None = None


# --- the decision (pure) -------------------------------------------------------------------------


def segment_problems(p: FacePresence, t: FaceThresholds) -> list[str]:
    """Each threshold this segment misses, as a sentence naming the segment and the figure."""
    name = f"segment {p.segment}"
    if p.sampled == 0:
        return [f"{name}: no frame could be sampled to look for a face"]
    problems = []
    if p.share < t.min_face_share:
        problems.append(
            f"{name}: a face in {p.share:.0%} of {p.sampled} sampled frames (at least {t.min_face_share:.0%} wanted)"
        )
    if p.main_size is not None and p.main_size < t.min_face_size:
        problems.append(
            f"{name}: the face is {p.main_size:.1%} of the frame's short side "
            f"(at least {t.min_face_size:.0%} wanted; too small to lip-sync)"
        )
    return problems


def face_verdict(presences: list[FacePresence], thresholds: FaceThresholds, *, require_face: bool) -> FaceVerdict:
    """Warnings for every segment that misses a threshold; with `require_face`, the first one is the refusal."""
    problems = [problem for p in presences for problem in segment_problems(p, thresholds)]
    refusal = f"face required: {problems[0]}" if require_face and problems else None
    return FaceVerdict(tuple(problems), refusal)


# --- reading frames ----------------------------------------------------------------------------


def analysis_size(width: int, height: int, short_side: int = ANALYSIS_SHORT_SIDE) -> tuple[int, int]:
    """Even dimensions with the short side at most `short_side`, keeping the aspect ratio."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def frames_command(
    path: Path,
    *,
    fps: float,
    size: tuple[int, int],
    start: float = 0.0,
    duration: float | None = None,
    sparse: bool = False,
    pix_fmt: str = "rgb24",
) -> list[str]:
    """argv writing the first video stream as raw RGB frames on a regular `fps` grid from `start`.

    `sparse` (a few samples a second, where a frame more or less does not matter): frames that no other frame
    refers to (`skip_frame noref`: most B-frames, about half of an x264 stream) are not decoded at all, and
    the grid takes the nearest decoded frame. Never for the lip-sync score, which needs every frame's time.

    Decoded for analysis, not for show: without the deblocking filter (`skip_loop_filter`), with the decoder's
    non-compliant shortcuts allowed (`flags2 fast`) and the fastest scaler, which together make this decode
    cheaper than a plain one (about 0.8× its CPU time at 1080p); the models see no difference at this size."""
    window = ({"ss": f"{start:.6f}"} if start else {}) | ({"t": f"{duration:.6f}"} if duration else {})
    skip = {"skip_frame": "noref"} if sparse else {}
    source = ffmpeg.input(media_path(path), skip_loop_filter="all", flags2="fast", **skip, **window)
    stream = source["v:0"].filter("fps", fps=fps)
    stream = stream.filter("scale", size[0], size[1], flags="fast_bilinear")
    out = stream.output("pipe:", format="rawvideo", pix_fmt=pix_fmt, map_metadata=-1)
    return compile_stream(out.global_args("-nostdin", "-v", "error"))


PREFETCH_FRAMES = 16


def _read_ahead(stream: IO[bytes], frame_bytes: int, frames: queue.Queue[bytes | None]) -> None:
    """Read whole frames off ffmpeg's pipe into `frames` (None at the end), so ffmpeg keeps decoding while the
    models work: a pipe holds 64 KiB, under one frame, so without this the two would take turns."""
    try:
        while len(chunk := stream.read(frame_bytes)) == frame_bytes:
            frames.put(chunk)
    finally:
        frames.put(None)


FRAME_SHAPES: dict[str, Callable[[int, int], tuple[int, ...]]] = {
    "rgb24": lambda width, height: (height, width, 3),
    # planar Y, then U and V at half size: the layout cv2.cvtColor(COLOR_YUV2RGB_I420) reads
    "yuv420p": lambda width, height: (height * 3 // 2, width),
}


def decode_frames(
    argv: list[str], size: tuple[int, int], path: Path, pix_fmt: str = "rgb24"
) -> Iterator[npt.NDArray[np.uint8]]:
    """Frames of `frames_command`'s output (shaped by `FRAME_SHAPES[pix_fmt]`), one at a time; a failed decode
    is an InputError."""
    shape = FRAME_SHAPES[pix_fmt](*size)
    frame_bytes = int(np.prod(shape))
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty decoder cannot block on it
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None  # stdout=PIPE
        frames: queue.Queue[bytes | None] = queue.Queue(PREFETCH_FRAMES)
        reader = threading.Thread(target=_read_ahead, args=(proc.stdout, frame_bytes, frames), daemon=True)
        reader.start()
        try:
            while (chunk := frames.get()) is not None:
                yield np.frombuffer(chunk, np.uint8).reshape(shape)
            if proc.wait() != 0:
                errors.seek(0)
                lines = errors.read().decode(errors="replace").strip().splitlines()
                raise InputError(path, f"cannot decode the video: {lines[-1] if lines else proc.returncode}")
        finally:
            if proc.poll() is None:
                proc.kill()
            while reader.is_alive():  # unblock a reader waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    frames.get(timeout=0.05)
            proc.wait()
            proc.stdout.close()


# --- the models (both carried in the mediapipe wheel) -------------------------------------------


def _quiet_mediapipe() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    filter_native_stderr()


@contextmanager
def face_detector() -> Iterator[object]:
    """mediapipe's full-range face detector (face_detection_full_range_sparse.tflite): the face mesh's own
    detector is short-range and misses a face of 15 % of a 720p frame, which is still one we can lip-sync."""
    _quiet_mediapipe()
    from mediapipe.python.solutions import face_detection

    detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
    try:
        yield detector
    finally:
        detector.close()


def detect_faces(detector: Any, frame: npt.NDArray[np.uint8]) -> list[FaceBox]:
    """Every face the detector finds in `frame`, largest first."""
    result = detector.process(frame)
    boxes = []
    for detection in result.detections or []:
        b = detection.location_data.relative_bounding_box
        x, y = max(0.0, b.xmin), max(0.0, b.ymin)
        boxes.append(FaceBox(x, y, min(1.0, b.xmin + b.width) - x, min(1.0, b.ymin + b.height) - y))
    return sorted(boxes, key=lambda box: -box.w * box.h)


@contextmanager
def face_mesh() -> Iterator[object]:
    """mediapipe's legacy FaceMesh (face_landmark.tflite) in tracking mode: consecutive frames of one video,
    the landmarks of one frame seeding the next."""
    _quiet_mediapipe()
    from mediapipe.python.solutions import face_mesh as mp_face_mesh

    mesh = mp_face_mesh.FaceMesh(
        static_image_mode=False,
        max_num_faces=1,
        refine_landmarks=False,
        min_detection_confidence=0.5,
        min_tracking_confidence=0.5,
    )
    try:
        yield mesh
    finally:
        mesh.close()


def landmarks(
    mesh: Any, frame: npt.NDArray[np.uint8], ids: tuple[int, ...]
) -> dict[int, npt.NDArray[np.float64]] | None:
    """The face's landmarks `ids` (of the mesh's 468) as pixel coordinates of `frame`, or None without a face."""
    result = mesh.process(frame)
    if not result.multi_face_landmarks:
        return None
    h, w = frame.shape[:2]
    points = result.multi_face_landmarks[0].landmark
    return {i: np.array((points[i].x * w, points[i].y * h)) for i in ids}


def median_box(boxes: list[FaceBox]) -> FaceBox | None:
    if not boxes:
        return None
    x, y, w, h = np.median(np.array([(b.x, b.y, b.w, b.h) for b in boxes]), axis=0)
    return FaceBox(float(x), float(y), float(w), float(h))


def presence_of(segment: int, faces_per_frame: list[list[FaceBox]], size: tuple[int, int], fps: float) -> FacePresence:
    """The figures of a segment from the faces found in each sampled frame."""
    main = median_box([faces[0] for faces in faces_per_frame if faces])
    return FacePresence(
        segment=segment,
        sampled=len(faces_per_frame),
        with_face=sum(1 for faces in faces_per_frame if faces),
        max_faces=max(map(len, faces_per_frame), default=0),
        main_box=main,
        main_size=None if main is None else main.size(*size),
        width=size[0],
        height=size[1],
        fps=fps,
    )


def face_presence(path: str | os.PathLike[str], segment: int = 0, *, fps: float = PREFLIGHT_FPS) -> FacePresence:
    """Sample `path` at `fps` and record the faces the detector finds (see FacePresence)."""
    path = Path(path)
    video = probe_video(path).video
    assert video is not None  # probe_video requires one
    size = analysis_size(video.display_width, video.display_height)
    with face_detector() as detector:
        found = [
            detect_faces(detector, frame)
            for frame in decode_frames(frames_command(path, fps=fps, size=size, sparse=True), size, path)
        ]
    return presence_of(segment, found, size, fps)
