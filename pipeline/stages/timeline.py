"""The cut list for editors: `timeline.otio` (OpenTimelineIO) and a CMX3600 `cuts.edl`, both written by
OpenTimelineIO (the EDL by its cmx_3600 adapter, the `otio-cmx3600-adapter` package: since OTIO 0.16 the core
wheel carries only its own formats).

One video track, one clip per planned segment, each referencing the source media (a file:// URL) with its
source timecode: the source's own start timecode when it has one (a QuickTime tmcd track, MXF, DV), else
00:00:00:00, plus the segment's first frame. The record side starts at 00:00:00:00 and the clips follow
each other with no gap, so the timeline lasts exactly the source.

`build_timeline` is pure; `source_timecode` reads MediaInfo; `write_timeline` renders both files before
writing either, each atomically.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import opentimelineio as otio
from opentimelineio.opentime import RationalTime, TimeRange, from_timecode
from pymediainfo import MediaInfo

from ..errors import InputError
from ..fsutil import write_text_atomic
from .cuts import CutPlan

ZERO_TIMECODE = "00:00:00:00"
OTIO_NAME = "timeline.otio"
EDL_NAME = "cuts.edl"
REEL_CHARS = 8  # CMX3600's reel field


def reel_name(source: Path) -> str:
    """The EDL reel: the file's stem in letters and digits (the adapter would take the URL-escaped name)."""
    return re.sub(r"[^A-Za-z0-9]", "", source.stem)[:REEL_CHARS] or "AX"


def source_timecode(path: str | Path) -> str | None:
    """The timecode of the source's first frame, as the file stores it ("01:00:00;00" is drop-frame), or None."""
    for track in MediaInfo.parse(str(path)).tracks:
        if track.track_type in ("Other", "Video") and track.time_code_of_first_frame:
            return str(track.time_code_of_first_frame)
    return None


def build_timeline(
    plan: CutPlan,
    source: str | Path,
    *,
    start_timecode: str | None = None,
    name: str | None = None,
    clip_metadata: Sequence[Mapping[str, Any]] | None = None,
) -> otio.schema.Timeline:
    """The cut plan as an OTIO timeline. `clip_metadata[i]` is added to segment i's `metadata["lipsync"]`
    (provider job, measured offset, ...)."""
    source = Path(source).absolute()
    rate = float(plan.rate)
    timecode = start_timecode or ZERO_TIMECODE
    try:
        first = from_timecode(timecode, rate)
    except ValueError as exc:
        raise InputError(source, f"start timecode {timecode!r} does not fit {rate:.3f} fps: {exc}") from None
    available = TimeRange(first, RationalTime(plan.frames, rate))
    # types-opentimelineio 0.17 imports schema.Track without re-exporting it, so mypy misses it
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)  # type: ignore[attr-defined]
    reel = reel_name(source)
    for seg in plan.segments:
        extra = dict(clip_metadata[seg.index]) if clip_metadata else {}
        track.append(
            otio.schema.Clip(
                name=f"seg{seg.index:03d}",
                media_reference=otio.schema.ExternalReference(target_url=source.as_uri(), available_range=available),
                source_range=TimeRange(first + RationalTime(seg.start_frame, rate), RationalTime(seg.frames, rate)),
                metadata={
                    "lipsync": {
                        "index": seg.index,
                        "cut_kind": str(seg.cut.kind),
                        "cut_reason": seg.cut.reason,
                        **extra,
                    },
                    "cmx_3600": {"reel": reel},
                },
            )
        )
    timeline = otio.schema.Timeline(
        name=name or source.stem,
        metadata={
            "lipsync": {
                "source": str(source),
                "source_timecode": timecode,
                "rate": f"{plan.rate.numerator}/{plan.rate.denominator}",
                "reasons": list(plan.reasons),
            }
        },
    )
    timeline.tracks.append(track)
    return timeline


@dataclass(frozen=True)
class TimelineFiles:
    otio: Path
    edl: Path


def write_timeline(timeline: otio.schema.Timeline, out_dir: str | Path) -> TimelineFiles:
    """`timeline.otio` and `cuts.edl` in `out_dir`; neither is written unless both render."""
    out_dir = Path(out_dir)
    files = TimelineFiles(out_dir / OTIO_NAME, out_dir / EDL_NAME)
    otio_text = otio.adapters.write_to_string(timeline, "otio_json")
    edl_text = otio.adapters.write_to_string(timeline, "cmx_3600")
    write_text_atomic(files.otio, otio_text)
    write_text_atomic(files.edl, edl_text)
    return files
