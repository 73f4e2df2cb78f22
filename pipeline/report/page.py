"""Gathering a run's jobs (collect) and writing them as one HTML page (render_page). Every string that comes
from a user or a file (job ids, file names, notes, errors, config text) goes through `html.escape`."""

from __future__ import annotations

import base64
import itertools
import logging
import os
import subprocess
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

from ..ffmpeg import compile_stream, media_path
from ..fsutil import write_text_atomic
from ..run.ledger import JobView, read_status
from ..run.reviews import Review, Reviews
from ..run.rundir import REPORT_NAME
from ..secrets import redact
from ..stages.avsync import decode_pcm
from . import plots

log = logging.getLogger("lipsync.report")
PLOT_RATE = 8000
SHEET_TILES = (4, 2)


@dataclass(frozen=True)
class JobPage:
    job: JobView
    manifest: dict[str, Any] | None
    final: str | None  # paths relative to the run directory
    sources: list[str] = field(default_factory=list)
    poster: str | None = None  # data URIs
    contact_sheet: str | None = None
    waveform_svg: str | None = None
    mouth_svgs: list[str] = field(default_factory=list)
    sync: list[dict[str, Any]] = field(default_factory=list)


def _inside(run_dir: Path, path: str | Path) -> str | None:
    """`path` relative to the run directory, or None when it lies outside it."""
    rel = os.path.relpath(Path(path).resolve(), run_dir.resolve())
    return None if rel.startswith("..") else Path(rel).as_posix()


def _image(video: Path, *, at: float, vf: str, codec: str) -> str | None:
    """One image of `video` from `at` s through the filter `vf`, as a data URI (None if ffmpeg gives nothing)."""
    out = ffmpeg.input(media_path(video), ss=f"{at:.3f}").video.output(
        "pipe:", vframes=1, vf=vf, format="image2", vcodec=codec
    )
    done = subprocess.run(
        compile_stream(out.global_args("-nostdin", "-v", "error")), capture_output=True, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0 or not done.stdout:
        log.warning("%s: no image for the report: %s", video.name, done.stderr.decode(errors="replace").strip())
        return None
    mime = "image/png" if codec == "png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(done.stdout).decode()}"


def poster(video: Path, seconds: float) -> str | None:
    return _image(video, at=seconds / 2, vf="scale=480:-2", codec="png")


def contact_sheet(video: Path, seconds: float) -> str | None:
    cols, rows = SHEET_TILES
    vf = f"fps={cols * rows / max(seconds, 0.1):.6f},scale=160:-2,tile={cols}x{rows}"
    return _image(video, at=0.0, vf=vf, codec="mjpeg")


def _windows(manifest: dict[str, Any]) -> list[tuple[float, float | None]]:
    """Each delivered segment's (start, duration) in the final: from the stitch plan, else the whole file."""
    seconds = (((manifest.get("audio") or {}).get("mux") or {}).get("plan") or {}).get("segment_seconds")
    if not seconds:
        return [(0.0, None)]
    return list(zip(itertools.accumulate(seconds[:-1], initial=0.0), seconds, strict=True))


def _sync_scores(final: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's lip-sync figures; measured here for a run delivered before they were recorded."""
    recorded: list[dict[str, Any]] | None = (manifest.get("verification") or {}).get("lip_sync")
    if recorded:
        return recorded
    from ..stages.mouth import measure_sync

    return [
        measure_sync(final, segment=i, start=start, duration=duration).model_dump(mode="json")
        for i, (start, duration) in enumerate(_windows(manifest))
    ]


def _provider_results(work: Path) -> list[Path]:
    """The latest provider result of each segment (`provider-<segment>-<key>.mp4`), in segment order."""
    latest: dict[int, Path] = {}
    for path in sorted(work.glob("provider-*.mp4"), key=lambda p: p.stat().st_mtime) if work.is_dir() else []:
        segment = path.name.split("-")[1]
        if segment.isdigit():
            latest[int(segment)] = path
    return [latest[i] for i in sorted(latest)]


def _waveform(run_dir: Path, job_dir: Path, manifest: dict[str, Any]) -> str | None:
    mux = (manifest.get("audio") or {}).get("mux") or {}
    master = job_dir / mux["audio_file"] if mux.get("audio_file") else None
    results = _provider_results(run_dir / ".work" / job_dir.name)
    if master is None or not master.is_file() or not results:
        return None
    provider = np.concatenate([decode_pcm(r, sample_rate=PLOT_RATE) for r in results])
    return plots.waveform_svg(decode_pcm(master, sample_rate=PLOT_RATE), provider, PLOT_RATE, mux.get("offset_s"))


def _job_page(run_dir: Path, view: JobView) -> JobPage:
    job_dir = run_dir / view.row.job_id
    manifest_path = job_dir / "manifest.json"
    final = job_dir / "final.mp4"
    if not manifest_path.is_file() or not final.is_file():
        return JobPage(job=view, manifest=None, final=None)
    import json

    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    seconds = ((manifest.get("verification") or {}).get("figures") or {}).get("video_s") or 1.0
    segments = (manifest.get("conform") or {}).get("segments") or []
    sources = [rel for s in segments if s.get("video") and (rel := _inside(run_dir, s["video"]))]
    sync = _sync_scores(final, manifest)
    return JobPage(
        job=view,
        manifest=manifest,
        final=_inside(run_dir, final),
        sources=sources,
        poster=poster(final, seconds),
        contact_sheet=contact_sheet(final, seconds),
        waveform_svg=_waveform(run_dir, job_dir, manifest),
        mouth_svgs=[plots.mouth_svg(s) for s in sync],
        sync=sync,
    )


def collect(run_dir: str | Path) -> list[JobPage]:
    run_dir = Path(run_dir)
    return [_job_page(run_dir, view) for view in read_status(run_dir).jobs]


# --- HTML -----------------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
section.job{border-top:2px solid #ccc;padding-top:1em;margin-top:2em}
.players{display:flex;gap:1em;flex-wrap:wrap} .players figure{margin:0}
video{width:480px;max-width:100%;background:#000}
table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top}
.fail{color:#b00;font-weight:bold} .ok{color:#070}
.timeline{display:flex;height:1.6em;border:1px solid #999;margin:.5em 0}
.timeline div{border-right:1px solid #333;overflow:hidden;white-space:nowrap;font-size:.8em;padding:0 .3em;
  background:#e8f0ff}
.review{background:#f6f6f6;padding:.6em;margin:.6em 0} .decision-approved{color:#070} .decision-rejected{color:#b00}
svg{max-width:100%;height:auto}
"""


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape('' if v is None else str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _timeline(manifest: dict[str, Any]) -> str:
    conform = manifest.get("conform") or {}
    segments = conform.get("segments") or []
    plans = [(v.get("plan") or {}) for v in (conform.get("video") or {}).get("segments") or []]
    total = sum(max(0.0, s["end"] - s["start"]) for s in segments) or 1.0
    bars = "".join(
        f'<div style="width:{100 * max(0.0, s["end"] - s["start"]) / total:.2f}%">'
        f"seg{s['index']:03d} {s['start']:.2f}–{s['end']:.2f} s</div>"
        for s in segments
    )
    reasons = [
        [f"seg{s['index']:03d}", d.get("what"), d.get("reason")]
        for s, plan in zip(segments, plans, strict=True)
        for d in plan.get("decisions") or []
    ]
    return f'<div class="timeline">{bars}</div>' + _table(["segment", "decision", "reason"], reasons)


def _verification(manifest: dict[str, Any]) -> str:
    checks = (manifest.get("verification") or {}).get("checks") or []
    rows = "".join(
        f'<tr><td>{escape(c["name"])}</td><td class="{"ok" if c["ok"] else "fail"}">{"ok" if c["ok"] else "FAIL"}</td>'
        f"<td>{escape(str(c.get('measured')))}</td><td>{escape(str(c.get('allowed')))}</td>"
        f"<td>{escape(c.get('detail') or '')}</td></tr>"
        for c in checks
    )
    return f"<table><tr><th>check</th><th></th><th>measured</th><th>allowed</th><th>detail</th></tr>{rows}</table>"


def _sync_table(sync: list[dict[str, Any]]) -> str:
    rows = [
        [
            s.get("segment"),
            s.get("status"),
            (s.get("face") or {}).get("face_share"),
            (s.get("face") or {}).get("main_size"),
            s.get("offset_frames"),
            s.get("offset_s"),
            s.get("correlation"),
            s.get("confidence"),
        ]
        for s in sync
    ]
    return _table(
        ["segment", "lip sync", "face share", "face size", "offset (frames)", "offset (s)", "r", "confidence (sd)"],
        rows,
    )


def _cost(manifest: dict[str, Any]) -> str:
    jobs = manifest.get("provider_jobs") or []
    reported = [j.get("credits") for j in jobs if j.get("credits") is not None]
    estimate = manifest.get("cost") or {}
    return (
        f"<p>estimated: {escape(str(estimate.get('estimated', 'not recorded')))}; reported by the provider: "
        f"{escape(', '.join(map(str, reported)) if reported else 'not reported')}</p>"
    )


def _review_block(job_id: str, review: Review | None, interactive: bool) -> str:
    state = (
        (
            f'<p class="decision-{review.decision.value}">{escape(review.decision.value)}'
            f"{': ' + escape(review.note) if review.note else ''}</p>"
        )
        if review
        else "<p>not reviewed</p>"
    )
    if not interactive:
        return f'<div class="review">{state}</div>'
    jid = escape(job_id, quote=True)
    return (
        f'<div class="review" data-job="{jid}">{state}'
        f'<form method="post" action="review"><input type="hidden" name="job" value="{jid}">'
        f'<button name="decision" value="approved" class="approve">approve</button> '
        f'<input name="note" class="note" placeholder="why (required to reject)" size="40"> '
        f'<button name="decision" value="rejected" class="reject">reject</button></form></div>'
    )


def _job_section(page: JobPage, review: Review | None, interactive: bool) -> str:
    row = page.job.row
    head = (
        f'<section class="job" id="job-{escape(row.job_id, quote=True)}"><h2>{escape(row.job_id)}</h2>'
        f"<p>provider {escape(row.provider)} · {escape(row.stage.value)}"
        f"{' · ' + escape(row.error) if row.error else ''}</p>"
    )
    ids = _table(
        ["segment", "attempt", "state", "provider job id"],
        [[c.segment, c.attempt, c.state.value, c.provider_job_id] for c in page.job.creates],
    )
    parts = [head, _review_block(row.job_id, review, interactive)]
    if page.manifest is None or page.final is None:  # no final inside the run directory: nothing to play
        return "".join([*parts, "<h3>provider jobs</h3>", ids, "</section>"])
    images = "".join(
        f'<img alt="{alt}" src="{uri}"> '
        for alt, uri in (("poster frame", page.poster), ("contact sheet", page.contact_sheet))
        if uri
    )
    sources = "".join(
        f'<figure><video controls preload="metadata" src="{escape(s, quote=True)}"></video>'
        f"<figcaption>source {escape(s)}</figcaption></figure>"
        for s in page.sources
    )
    final = (
        f'<figure><video controls preload="metadata" src="{escape(page.final, quote=True)}"></video>'
        f"<figcaption>final {escape(page.final)}</figcaption></figure>"
    )
    inputs = ", ".join(escape(f"{i.get('role')}: {i.get('path')}") for i in page.manifest.get("inputs") or [])
    parts += [
        f"<p>inputs: {inputs}</p>",
        f"<div>{images}</div>",
        f'<div class="players">{sources}{final}</div>',
        "<h3>segments</h3>",
        _timeline(page.manifest),
        "<h3>sound: master vs provider</h3>",
        page.waveform_svg or "<p>no master audio to compare</p>",
        "<h3>lips vs speech</h3>",
        _sync_table(page.sync),
        *page.mouth_svgs,
        "<h3>verification</h3>",
        _verification(page.manifest),
        "<h3>cost</h3>",
        _cost(page.manifest),
        "<h3>provider jobs</h3>",
        ids,
        "</section>",
    ]
    return "".join(parts)


def render_page(run_dir: Path, pages: list[JobPage], reviews: dict[str, Review], *, interactive: bool = False) -> str:
    title = f"lipsync run {Path(run_dir).resolve().name}"
    summary = _table(
        ["job", "stage", "review"],
        [
            [
                p.job.row.job_id,
                p.job.row.stage.value,
                reviews[p.job.row.job_id].decision.value if p.job.row.job_id in reviews else "",
            ]
            for p in pages
        ],
    )
    body = "".join(_job_section(p, reviews.get(p.job.row.job_id), interactive) for p in pages)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<link rel="icon" href="data:,"><style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>'
        f"{summary}{body}</body></html>"
    )


def write_report(run_dir: str | Path) -> Path:
    """Write run_dir/report.html (atomically) and refresh the run's checksums."""
    from ..run.rundir import refresh_checksums

    run_dir = Path(run_dir)
    pages = collect(run_dir)
    target = run_dir / REPORT_NAME
    write_text_atomic(target, redact(render_page(run_dir, pages, Reviews(run_dir).all())))
    refresh_checksums(run_dir)
    return target
