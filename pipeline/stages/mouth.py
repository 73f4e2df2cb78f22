"""Do the lips follow the speech? Mouth opening per frame against the speech envelope, cross-correlated.

One decode of the segment (`measure_sync`): every frame on a regular grid at the video's rate, scaled down;
every `DETECT_EVERY`-th frame goes to the full-range face detector (the face figures of the segment, and the
crop that follows the face), every frame's crop to the face-landmark model in tracking mode. Mouth opening =
the mean gap between the inner lips at three points across the mouth, over the face's height (forehead to
chin), so it does not change with the face's size. The speech envelope is the sound's log energy per video
frame. `score_sync` (pure) correlates the two (Pearson, over the frames where a face was found) at every lag
within ±`max_lag_frames`; the best lag is the offset (> 0: the sound comes later than the lips). The
confidence is how far that best correlation stands above chance, in standard deviations of the correlations
at circular shifts beyond the search window (where the sound cannot belong to the lips): a sound that
follows the lips stands far out, an unrelated one is within the noise whatever its lag. It adapts to the
segment's length (a short segment has wide chance correlations), so one threshold serves every length.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from .avsync import decode_pcm
from .face import (
    FaceBox,
    FacePresence,
    analysis_size,
    decode_frames,
    detect_faces,
    face_detector,
    face_mesh,
    frames_command,
    landmarks,
    presence_of,
)
from .probe import probe_video

log = logging.getLogger("lipsync.mouth")

# MediaPipe face-mesh landmark ids: inner lip pairs (upper, lower) at the left, middle and right of the mouth
INNER_LIP_PAIRS = ((82, 87), (13, 14), (312, 317))
FACE_TOP, FACE_CHIN = 10, 152
MOUTH_IDS = (*(i for pair in INNER_LIP_PAIRS for i in pair), FACE_TOP, FACE_CHIN)
DETECT_EVERY_S = 1 / 3
SYNC_SHORT_SIDE = 360
"""Every frame is decoded for the score, so smaller than the pre-flight's 480: scaling 1080p to 480 costs a
fifth of a decode more than to 360, and a face the pre-flight lets through (≥ 10 %) is still 36 px."""
SYNC_PIX_FMT = "yuv420p"
"""ffmpeg hands over the scaled frames as they decode (I420), converted to RGB here (OpenCV, which mediapipe
installs): its own conversion to RGB costs a quarter of a decode more, and the pipe carries half the bytes."""
MESH_EVERY = 2
"""The landmark model runs on every MESH_EVERY-th frame; the frames between get the opening interpolated
(linearly) from their neighbours. The model is the score's main cost (about 5 ms a frame, a fixed price
whatever the crop size), and the speech envelope is smooth at this scale: on the ground-truth set the
offsets come back as exactly with 2 as with 1 (tests/test_face_sync.py)."""
CROP_MARGIN = 2.2
"""Crop side over the detected face box's longer side: room for the head to move between detections."""
ENVELOPE_RATE = 16000
ENVELOPE_FLOOR_DB = 50.0
"""Frames quieter than this under the loudest frame count as this quiet: pauses, not room-tone detail."""


class SyncMethod(BaseModel):
    """How the score was measured: recorded with every score."""

    model_config = ConfigDict(frozen=True)

    name: str = "mouth opening vs speech envelope, normalised cross-correlation"
    opening: str = "mean inner-lip gap (face-mesh landmarks 82-87, 13-14, 312-317) / face height (10-152), per frame"
    envelope: str = (
        f"log energy of the mono sound at {ENVELOPE_RATE} Hz per video frame, floored "
        f"{ENVELOPE_FLOOR_DB:g} dB under the loudest frame"
    )
    max_lag_frames: int = 15
    confidence: str = (
        "(best r - mean r) / std r of the circular shifts beyond the search window, in standard deviations"
    )
    detector_every_s: float = round(DETECT_EVERY_S, 4)
    mesh_every_frames: int = Field(default=MESH_EVERY, ge=1)  # the frames between: interpolated linearly
    model: str = "mediapipe 0.10.21 face_detection (full range) + face_mesh (face_landmark.tflite)"


class SyncScore(BaseModel):
    """One segment's lip-sync figures. `status` is "ok", or why there are no numbers."""

    model_config = ConfigDict(frozen=True)

    segment: int
    start_s: float
    fps: float
    frames: int
    frames_with_face: int
    status: Literal["ok", "no face", "no sound", "too short"]
    offset_frames: int | None = None
    offset_s: float | None = None
    correlation: float | None = None  # Pearson r at the best lag
    confidence: float | None = None
    lags: list[float] = []  # r at each lag, -max_lag..+max_lag (for the report's plot)
    opening: list[float | None] = []  # per frame (None: no face found)
    envelope: list[float] = []  # per frame, 0..1
    face: dict[str, Any] | None = None  # FacePresence.to_dict() of the detector's samples
    method: SyncMethod = SyncMethod()


class SyncPolicy(BaseModel):
    """What `verify` does with the score: warn (default) or fail the job beyond these bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    check: Literal["warn", "fail"] = "warn"
    min_confidence: float = Field(3.0, ge=0)
    """Standard deviations above chance: the best of 31 lags of unrelated signals passes 3 about 4 % of the time."""
    max_offset_frames: int = Field(2, ge=0, le=15)


# --- pure parts ------------------------------------------------------------------------------------


def mouth_opening(points: dict[int, npt.NDArray[np.float64]]) -> float:
    """Inner-lip gap over face height from one face's landmarks (MOUTH_IDS, in pixels)."""
    gap = np.mean([np.linalg.norm(points[a] - points[b]) for a, b in INNER_LIP_PAIRS])
    height = np.linalg.norm(points[FACE_TOP] - points[FACE_CHIN])
    return float(gap / height) if height > 0 else float("nan")


def speech_envelope(pcm: npt.NDArray[np.float64], rate: int, fps: float, frames: int) -> npt.NDArray[np.float64]:
    """Log energy of `pcm` in each video frame's span, scaled to 0..1 (0 = the floor, 1 = the loudest frame)."""
    edges = np.round(np.arange(frames + 1) * rate / fps).astype(int)
    padded = np.zeros(max(edges[-1], len(pcm)))
    padded[: len(pcm)] = pcm
    energy = np.array([np.mean(padded[a:b] ** 2) if b > a else 0.0 for a, b in itertools.pairwise(edges)])
    if energy.max(initial=0.0) <= 0:
        return np.zeros(frames)
    db: npt.NDArray[np.float64] = 10 * np.log10(np.maximum(energy, 1e-20) / energy.max())
    return (np.maximum(db, -ENVELOPE_FLOOR_DB) + ENVELOPE_FLOOR_DB) / ENVELOPE_FLOOR_DB


def _pearson(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) >= 3 and a.std() > 0 and b.std() > 0 else float("nan")


def lag_correlations(
    opening: npt.NDArray[np.float64], envelope: npt.NDArray[np.float64], max_lag: int
) -> npt.NDArray[np.float64]:
    """Pearson r of opening[i] against envelope[i + lag] for lag in -max_lag..max_lag (NaN openings skipped)."""
    n, out = len(opening), []
    for lag in range(-max_lag, max_lag + 1):
        i = np.arange(max(0, -lag), min(n, len(envelope) - lag))
        i = i[~np.isnan(opening[i])]
        out.append(_pearson(opening[i], envelope[i + lag]))
    return np.array(out)


MIN_CHANCE_SHIFTS = 10


def chance_correlations(
    opening: npt.NDArray[np.float64], envelope: npt.NDArray[np.float64], max_lag: int
) -> npt.NDArray[np.float64]:
    """r of the opening against the envelope rotated by every shift that keeps clear of the search window."""
    valid = ~np.isnan(opening)
    n = len(opening)
    return np.array(
        [_pearson(opening[valid], np.roll(envelope[:n], s)[valid]) for s in range(max_lag + 3, n - max_lag - 2)]
    )


def score_sync(
    opening: npt.NDArray[np.float64], envelope: npt.NDArray[np.float64], max_lag: int
) -> tuple[int, float, float, npt.NDArray[np.float64]] | None:
    """(offset in frames, r at it, confidence, r per lag); None when the segment is too short to tell chance
    (fewer than MIN_CHANCE_SHIFTS shifts clear of the window) or nothing varies (no sound, a still mouth)."""
    r = lag_correlations(opening, envelope, max_lag)
    chance = chance_correlations(opening, envelope, max_lag)
    chance = chance[~np.isnan(chance)]
    if np.all(np.isnan(r)) or len(chance) < MIN_CHANCE_SHIFTS or chance.std() == 0:
        return None
    best = int(np.nanargmax(r))
    return best - max_lag, float(r[best]), float((r[best] - chance.mean()) / chance.std()), r


def sync_problems(score: SyncScore, policy: SyncPolicy) -> list[str]:
    """Why a segment's score is out of bounds, in words (empty: within bounds)."""
    name = f"segment {score.segment}"
    if score.status != "ok":
        return [f"{name}: lip sync not measured ({score.status})"]
    assert score.confidence is not None and score.offset_frames is not None  # an "ok" score has both
    problems = []
    if score.confidence < policy.min_confidence:
        problems.append(f"{name}: lip-sync confidence {score.confidence:.1f} (at least {policy.min_confidence:g})")
    if abs(score.offset_frames) > policy.max_offset_frames:
        problems.append(
            f"{name}: lips and sound {score.offset_frames:+d} frames apart (within ±{policy.max_offset_frames} wanted)"
        )
    return problems


# --- measuring ------------------------------------------------------------------------------------


def _crop(frame: npt.NDArray[np.uint8], box: FaceBox) -> npt.NDArray[np.uint8]:
    """A square around `box` (CROP_MARGIN × its longer side), clamped to the frame. Not resized: the landmark
    model scales its region of interest to 192×192 itself."""
    h, w = frame.shape[:2]
    side = int(min(max(box.w * w, box.h * h) * CROP_MARGIN, w, h))
    cx, cy = (box.x + box.w / 2) * w, (box.y + box.h / 2) * h
    x0 = int(np.clip(cx - side / 2, 0, w - side))
    y0 = int(np.clip(cy - side / 2, 0, h - side))
    return np.ascontiguousarray(frame[y0 : y0 + side, x0 : x0 + side])


def mouth_track(
    path: Path,
    *,
    fps: float,
    start: float = 0.0,
    duration: float | None = None,
    segment: int = 0,
    mesh_every: int = MESH_EVERY,
) -> tuple[npt.NDArray[np.float64], FacePresence]:
    """Mouth opening per frame (NaN where no face) and the detector's face figures, from one decode. The
    landmarks are found on every `mesh_every`-th frame, the frames between interpolated (`fill_between`)."""
    video = probe_video(path).video
    assert video is not None  # probe_video requires one
    size = analysis_size(video.display_width, video.display_height, SYNC_SHORT_SIDE)
    every = max(1, round(fps * DETECT_EVERY_S))
    openings: list[float] = []
    detected: list[list[FaceBox]] = []
    box: FaceBox | None = None
    argv = frames_command(path, fps=fps, size=size, start=start, duration=duration, pix_fmt=SYNC_PIX_FMT)
    with face_detector() as detector, face_mesh() as mesh:
        for n, planes in enumerate(decode_frames(argv, size, path, SYNC_PIX_FMT)):
            detect, measure = n % every == 0, n % mesh_every == 0
            if not (detect or measure):
                openings.append(float("nan"))
                continue
            frame = np.asarray(cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420), np.uint8)
            if detect:
                detected.append(detect_faces(detector, frame))
                box = detected[-1][0] if detected[-1] else box
            points = None
            if box is not None and measure:
                points = landmarks(mesh, _crop(frame, box), MOUTH_IDS)
            openings.append(mouth_opening(points) if points is not None else float("nan"))
    return fill_between(np.array(openings), mesh_every), presence_of(segment, detected, size, round(fps / every, 4))


def fill_between(opening: npt.NDArray[np.float64], every: int) -> npt.NDArray[np.float64]:
    """The frames the model skipped (all but every `every`-th), interpolated linearly between the measured
    frames on either side; left NaN where either side had no face, or past the last measured frame."""
    if every == 1:
        return opening
    filled = opening.copy()
    for n in range(len(opening)):
        if n % every:
            before, after = n - n % every, n - n % every + every
            if after < len(opening):
                w = (n % every) / every
                filled[n] = (1 - w) * opening[before] + w * opening[after]  # NaN when either is
    return filled


def measure_sync(
    path: str | os.PathLike[str],
    *,
    segment: int = 0,
    start: float = 0.0,
    duration: float | None = None,
    audio: str | os.PathLike[str] | None = None,
    method: SyncMethod = SyncMethod(),
) -> SyncScore:
    """The lip-sync score of `path` from `start` for `duration` s, against its own sound (or `audio`'s)."""
    path = Path(path)
    video = probe_video(path).video
    assert video is not None  # probe_video requires one
    fps = video.fps or 25.0
    opening, presence = mouth_track(
        path, fps=fps, start=start, duration=duration, segment=segment, mesh_every=method.mesh_every_frames
    )
    pcm = decode_pcm(audio if audio is not None else path, sample_rate=ENVELOPE_RATE, start=start, duration=duration)
    envelope = speech_envelope(pcm, ENVELOPE_RATE, fps, len(opening))
    found = int(np.sum(~np.isnan(opening)))
    common: dict[str, Any] = {
        "segment": segment,
        "start_s": start,
        "fps": fps,
        "frames": len(opening),
        "frames_with_face": found,
        "opening": [None if np.isnan(v) else round(float(v), 4) for v in opening],
        "envelope": [round(float(v), 4) for v in envelope],
        "face": presence.to_dict(),
        "method": method,
    }
    if found < 2 * method.max_lag_frames:
        return SyncScore(status="no face", **common)
    if not np.any(envelope > 0):
        return SyncScore(status="no sound", **common)
    scored = score_sync(opening, envelope, method.max_lag_frames)
    if scored is None:
        return SyncScore(status="too short", **common)
    offset, r, confidence, lags = scored
    return SyncScore(
        status="ok",
        offset_frames=offset,
        offset_s=round(offset / fps, 4),
        correlation=round(r, 4),
        confidence=round(confidence, 4),
        lags=[round(float(v), 4) for v in lags],
        **common,
    )
