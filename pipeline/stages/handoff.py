"""Stage: the delivered folder. `<out>/<job-id>/final.mp4` + `manifest.json`, and `<out>/checksums.sha256`.

The manifest is the job's provenance: what went in (hashed), what was decided and why, every ffmpeg command,
what the provider did, what we measured, which tools did it. Its JSON is deterministic (sorted keys, no
volatile fields beyond the timestamps passed in) and passes through `pipeline.secrets.redact` before it is
written, as a last guard against a key leaking into a delivered file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import stat
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from .. import __version__
from ..errors import LipsyncError, ValidationError
from ..ffmpeg import ffmpeg_version
from ..fsutil import atomic_output, sha256_file, write_text_atomic
from ..prepare import Segment
from ..safetext import printable
from ..secrets import redact
from .probe import MediaProbe, probe
from .sync import SyncPlan
from .verify import VerifyReport

MANIFEST_NAME = "manifest.json"
FINAL_NAME = "final.mp4"
CHECKSUMS_NAME = "checksums.sha256"
log = logging.getLogger("lipsync.handoff")
PACKAGES = (
    "click",
    "ffmpeg-python",
    "imageio-ffmpeg",
    "pymediainfo",
    "pydub",
    "httpx",
    "tenacity",
    "pydantic",
    "numpy",
)


class _Section(BaseModel):
    # the schema (docs/manifest.schema.json) marks a field with a default required too: it is always written
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)


class InputFile(_Section):
    role: str  # "video", "audio", "script", ...
    path: str  # relative to the config file's folder, '/'-separated
    size_bytes: int
    sha256: str
    probe: MediaProbe | None = None  # its path as `path` above

    @classmethod
    def describe(cls, role: str, path: str | Path, base_dir: str | Path, media: MediaProbe | None = None) -> InputFile:
        """Hash `path` and summarize it; media roles ("video", "audio") are probed unless `media` is given."""
        path = Path(path)
        rel = Path(os.path.relpath(path.resolve(), Path(base_dir).resolve())).as_posix()
        if media is None and role in ("video", "audio"):
            media = _probe_quietly(path)
        summary = None if media is None else dataclasses.replace(media, path=Path(rel))  # no absolute paths
        return cls(role=role, path=rel, size_bytes=path.stat().st_size, sha256=sha256_file(path), probe=summary)


def _probe_quietly(path: Path) -> MediaProbe | None:
    """A summary is provenance, not a gate: the conform stage already refused unusable inputs."""
    try:
        return probe(path)
    except LipsyncError:
        return None


class ConformSection(_Section):
    """The plans (each with its reasons) as their to_dict(): what was re-encoded, trimmed or chunked, and why."""

    video: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    sync: SyncPlan | None = None  # footage with a voice track: the length policy applied
    text_chunks: list[str] = Field(default_factory=list)
    segments: list[Segment] = Field(default_factory=list)  # the provider jobs: source range, files, cut reason
    image: dict[str, Any] | None = None  # a talking portrait: the image plan (reasons) and what was written
    script: dict[str, Any] | None = None  # a talking portrait: the script fit (ChainPlan.to_dict())
    faces: list[dict[str, Any]] = Field(default_factory=list)  # the face pre-flight per segment (FacePresence)


class AudioSection(_Section):
    loudness: dict[str, Any] = Field(default_factory=dict)  # the conform stage's measured figures (LUFS, LRA, TP)
    mux: dict[str, Any] | None = None  # MuxResult.to_dict(): source, offset, plan


class ProviderJob(_Section):
    provider: str
    endpoint: str
    job_id: str
    segment: int = 0
    created_at: float | None = None  # unix seconds
    finished_at: float | None = None
    poll_count: int = 0
    credits: float | None = None  # as reported by the provider, if it does
    final_status: str | None = None  # the provider's own word for the outcome
    result_url: str | None = None
    width: int | None = None
    height: int | None = None
    usage: dict[str, float] | None = None  # the provider's usage figures as it names them (tokens_used, ...)


class SegmentCost(_Section):
    segment: int
    seconds: float  # the output length the estimate counts
    tts_characters: int = 0
    estimated: str  # an amount, or "unknown" (a provider that documents no price)
    reason: str


class CostSection(_Section):
    """What the job was estimated to cost before any create (pipeline.pricing), and what the provider reported."""

    estimated: str  # the total, or "unknown"
    currency: str | None = None
    price_source: str | None = None
    segments: list[SegmentCost] = Field(default_factory=list)
    reported_credits: float | None = None  # the sum over provider_jobs[].credits, when the provider reports them


class SegmentSummary(_Section):
    """One segment of the final, in one place: the source range it plays, why it ends there, the provider job
    that lip-synced it, its measured offset and verification (details in conform/provider_jobs/verification)."""

    index: int
    source_start: float  # seconds in the source video
    source_end: float
    cut_reason: str | None = None
    provider_job: str | None = None
    final_start_s: float | None = None  # where it starts in the final
    offset_s: float | None = None  # final audio vs the provider's result there
    correlation: float | None = None
    sent_s: float | None = None
    returned_s: float | None = None
    ok: bool | None = None  # every verification check of this segment passed


class ToolVersions(_Section):
    python: str
    lipsync: str
    ffmpeg: str
    mediainfo: str
    platform: str
    packages: dict[str, str]


class DeliveredFile(_Section):
    name: str
    size_bytes: int
    sha256: str


class ReviewSection(_Section):
    """An editor's decision on the delivered job (`lipsync review`), written in by pipeline.run.reviews."""

    job_id: str
    decision: Literal["approved", "rejected"]
    note: str  # why it was rejected (may be empty for an approval)
    decided_at: float  # unix seconds


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class Manifest(_Section):
    model_config = ConfigDict(  # reading one back: config_sha256 is computed
        extra="ignore", frozen=True, json_schema_serialization_defaults_required=True
    )

    schema_version: int = 1
    job_id: str
    created_at: float  # unix seconds, when the job was submitted
    completed_at: float | None = None
    inputs: list[InputFile]
    config: dict[str, Any]  # the resolved config (defaults applied)
    conform: ConformSection = Field(default_factory=ConformSection)
    audio: AudioSection = Field(default_factory=AudioSection)
    provider_jobs: list[ProviderJob] = Field(default_factory=list)
    segments: list[SegmentSummary] = Field(default_factory=list)
    cost: CostSection | None = None
    verification: VerifyReport | None = None
    ffmpeg_commands: list[list[str]] = Field(default_factory=list)
    delivered: list[DeliveredFile] = Field(default_factory=list)
    tools: ToolVersions
    review: ReviewSection | None = None  # absent until an editor decides

    @computed_field  # type: ignore[prop-decorator]  # mypy refuses a decorator over @property; pydantic documents this
    @property
    def config_sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.config).encode()).hexdigest()

    def to_json(self) -> str:
        """Deterministic text: sorted keys, 2-space indent, trailing newline; secrets redacted."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2, ensure_ascii=False)
        return redact(text) + "\n"


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of manifest.json as written (`Manifest.to_json`), computed fields included."""
    schema = Manifest.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _mediainfo_version() -> str:
    try:
        from pymediainfo import MediaInfo

        return MediaInfo._get_library()[2]  # (lib, handle, version string, version tuple); no public accessor
    except Exception:
        return "unknown"


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def tool_versions() -> ToolVersions:
    return ToolVersions(
        python=platform.python_version(),
        lipsync=__version__,
        ffmpeg=ffmpeg_version(),
        mediainfo=_mediainfo_version(),
        platform=platform.platform(terse=True),
        packages={name: _package_version(name) for name in PACKAGES},
    )


def _copy_into(src: Path, dst: Path) -> None:
    """Copy (never move: the source may be the only copy of a paid result) atomically, unless already there."""
    if dst.exists() and dst.resolve() == src.resolve():
        return
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_handoff(
    job_dir: str | Path, final: str | Path, manifest: Manifest, *, extra_files: Collection[str | Path] = ()
) -> Manifest:
    """Deliver `final` as `<job_dir>/final.mp4`, the `extra_files` beside it (same names), and manifest.json
    listing them with sizes and hashes. Returns the manifest as written."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    placed = [(Path(final), job_dir / FINAL_NAME)] + [(Path(f), job_dir / Path(f).name) for f in extra_files]
    stale = previously_delivered(job_dir) - {dst.name for _, dst in placed}
    for src, dst in placed:
        _copy_into(src, dst)
    delivered = [
        DeliveredFile(name=dst.name, size_bytes=dst.stat().st_size, sha256=sha256_file(dst)) for _, dst in placed
    ]
    written = manifest.model_copy(update={"delivered": delivered})
    write_text_atomic(job_dir / MANIFEST_NAME, written.to_json())
    for name in stale:  # e.g. the WAV of an earlier audio job, now a TTS job: it no longer matches final.mp4
        (job_dir / name).unlink(missing_ok=True)
    return written


def previously_delivered(job_dir: Path) -> set[str]:
    """What an earlier handoff into `job_dir` delivered, by its manifest (only our own files are ever removed)."""
    try:
        earlier = Manifest.model_validate_json((job_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {f.name for f in earlier.delivered if Path(f.name).name == f.name}


def _checksum_line(digest: str, rel: str) -> str:
    # GNU sha256sum escapes names holding a backslash or newline and marks the line with a leading backslash
    if "\\" in rel or "\n" in rel or "\r" in rel:
        escaped = rel.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{digest}  {escaped}\n"
    return f"{digest}  {rel}\n"


def delivered_files(out_dir: str | Path) -> list[str]:
    """What the job folders directly below `out_dir` delivered, by their manifests (and the manifests):
    paths relative to `out_dir`. A folder without a manifest of ours delivered nothing."""
    out_dir = Path(out_dir)
    found: list[str] = []
    for job_dir in sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.is_symlink()):
        if _regular_inside(out_dir, f"{job_dir.name}/{MANIFEST_NAME}") is None:
            continue
        names = previously_delivered(job_dir)
        found += [f"{job_dir.name}/{name}" for name in sorted(names | {MANIFEST_NAME})] if names else []
    return found


def _regular_inside(root: Path, rel: str | Path) -> str | None:
    """`rel` as a '/'-path if it names a regular file inside `root` reached through no symlink, else None."""
    rel_path = Path(rel)
    if rel_path.is_absolute():
        try:
            rel_path = rel_path.relative_to(root)
        except ValueError:
            return None
    if not rel_path.parts or any(part in ("", ".", "..") for part in rel_path.parts):
        return None
    here = root
    for part in rel_path.parts:
        here = here / part
        try:
            mode = here.lstat().st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return None
    return rel_path.as_posix() if stat.S_ISREG(mode) else None


def write_checksums(
    out_dir: str | Path, files: Iterable[str | Path] | None = None, *, protected: Collection[str] = ()
) -> Path:
    """`<out_dir>/checksums.sha256` over exactly `files` (the delivered files, relative to `out_dir` or
    inside it), sorted, in `sha256sum -c` format; None = `delivered_files(out_dir)`. A path that leaves
    `out_dir`, passes through a symlink or is not a regular file is left out (with a warning), never
    followed. `protected`: paths the run did not create (`run.rundir`); a checksum file among them is not
    overwritten (ValidationError)."""
    out_dir = Path(out_dir)
    target = out_dir / CHECKSUMS_NAME
    if CHECKSUMS_NAME in protected:
        raise ValidationError(
            f"{target}: lipsync did not write this file; it is left as it is and no checksums are written"
        )
    names: set[str] = set()
    for given in delivered_files(out_dir) if files is None else files:
        rel = _regular_inside(out_dir, given)
        if rel is None:
            log.warning(
                "checksums: %s is not a regular file inside %s (a symlink?); not listed", printable(given), out_dir
            )
        else:
            names.add(rel)
    text = "".join(_checksum_line(sha256_file(out_dir / name), name) for name in sorted(names))
    write_text_atomic(target, text)
    return target
