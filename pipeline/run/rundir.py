"""The run directory: the names lipsync uses in it, and whether a folder holds anything else.

`lipsync run` writes into its output folder (the ledger, the lock, `.work/`, one folder per job, the
checksums). A folder that already holds the user's own files must not be written into by mistake: their
`checksums.sha256` overwritten, a `*.part.*` of theirs taken for a temp file and deleted. So:

- the first run in a folder leaves a marker (`MARKER_NAME`); a folder with neither the marker nor a
  ledger (runs before the marker existed) that is not empty is foreign as a whole;
- in a marked folder every entry is judged by name (`judge_run_dir`, pure): ours are the run files,
  `.work/`, and the folders of the config's (or the ledger's) job ids holding only the handoff's files,
  `atomic_output` temp names of them and `take-<n>/` folders (an earlier delivery kept when a rejected job
  was delivered again: `archive_delivery`). Anything else, and any symlink, is foreign.
- `reserved_name_reason(job_id)` keeps a job id from naming one of the run's own files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..errors import ConfigError, ValidationError
from ..fsutil import is_temp_of, write_text_atomic
from ..stages.handoff import CHECKSUMS_NAME, FINAL_NAME, MANIFEST_NAME
from ..stages.timeline import EDL_NAME, OTIO_NAME
from .ledger import LEDGER_NAME, LOCK_NAME, POINTER_NAME

log = logging.getLogger("lipsync.run")

MARKER_NAME = ".lipsync-run"
WORK_DIR = ".work"
SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")
REPORT_NAME = "report.html"  # written by pipeline/report at the end of a run
RUN_FILES = frozenset(
    {MARKER_NAME, LOCK_NAME, POINTER_NAME, CHECKSUMS_NAME, REPORT_NAME, *(LEDGER_NAME + s for s in SQLITE_SIDE_FILES)}
)
REWRITTEN_RUN_FILES = (CHECKSUMS_NAME, MARKER_NAME, POINTER_NAME)  # written whole again by each run (atomic_output)
JOB_FILES = (FINAL_NAME, f"{Path(FINAL_NAME).stem}_audio.wav", MANIFEST_NAME, OTIO_NAME, EDL_NAME)
# Names a job id may not take: the run's own files and the files inside a job folder.
RESERVED_JOB_IDS = frozenset({*(n.lower() for n in RUN_FILES), WORK_DIR, *(n.lower() for n in JOB_FILES)})
# Device names Windows will not create a file under, with any extension (a run may live on a shared drive).
WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)
SHOWN_FOREIGN = 5
_TAKE_FOLDER = re.compile(r"take-[0-9]+")


class Kind(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"  # FIFO, socket, device


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the run directory, '/'-separated
    kind: Kind


@dataclass(frozen=True)
class RunDirVerdict:
    foreign: tuple[str, ...]  # entries lipsync did not create (relative paths), sorted
    reason: str

    @property
    def ok(self) -> bool:
        return not self.foreign


def reserved_name_reason(job_id: str) -> str | None:
    """Why `job_id` cannot name a job folder (it would be one of the run directory's own files), or None.
    Compared without case: a case-insensitive file system (macOS, Windows) makes `Ledger.SQLite` the ledger."""
    name = job_id.lower()
    if name in RESERVED_JOB_IDS:
        return f"{job_id!r} is a name the run directory uses for its own files"
    if name.split(".")[0] in WINDOWS_DEVICES:
        return f"{job_id!r} is a device name on Windows"
    if any(name.endswith(ext) for ext in (".sqlite", ".sqlite-wal", ".sqlite-shm", ".sqlite-journal", ".db")):
        return f"{job_id!r} looks like a database file the run directory keeps"
    if ".part" in name:
        return f"{job_id!r} looks like a temp file of an interrupted write"
    return None


def _is_ours(entry: Entry, job_ids: Collection[str]) -> bool:
    parts = entry.path.split("/")
    top = parts[0]
    if entry.kind in (Kind.SYMLINK, Kind.OTHER):
        return False
    if top == WORK_DIR:
        return entry.kind is Kind.DIR or len(parts) > 1
    if len(parts) == 1:
        if top in job_ids:
            return entry.kind is Kind.DIR
        # temp names: a write of ours in progress (two runs sharing a PostgreSQL ledger share the folder)
        return entry.kind is Kind.FILE and (top in RUN_FILES or any(is_temp_of(top, f) for f in REWRITTEN_RUN_FILES))
    if len(parts) != 2 or top not in job_ids:
        return False
    if entry.kind is Kind.DIR:
        return _TAKE_FOLDER.fullmatch(parts[1]) is not None
    return entry.kind is Kind.FILE and any(parts[1] == f or is_temp_of(parts[1], f) for f in JOB_FILES)


def judge_run_dir(entries: Iterable[Entry], job_ids: Collection[str], marked: bool) -> RunDirVerdict:
    """Which `entries` of a run directory lipsync did not create. `marked`: the folder has our marker (or
    a ledger); an unmarked folder's entries are all foreign. `job_ids`: the config's and the ledger's."""
    entries = list(entries)
    if not marked:
        foreign = tuple(sorted(e.path for e in entries if "/" not in e.path))
        return RunDirVerdict(foreign, "the folder is not empty and no lipsync run made it" if foreign else "empty")
    foreign = tuple(sorted(e.path for e in entries if not _is_ours(e, job_ids)))
    return RunDirVerdict(foreign, "it holds files lipsync did not write" if foreign else "a lipsync run directory")


def _kind(entry: os.DirEntry[str]) -> Kind:
    if entry.is_symlink():
        return Kind.SYMLINK
    if entry.is_dir(follow_symlinks=False):
        return Kind.DIR
    return Kind.FILE if entry.is_file(follow_symlinks=False) else Kind.OTHER


def list_run_dir(run_dir: Path, job_ids: Collection[str]) -> list[Entry]:
    """The top level of `run_dir` and the inside of its job folders (not of `.work/`, which is ours
    whole, nor of other folders, which are foreign whole). Never follows a symlink."""
    if not run_dir.is_dir():
        return []
    entries: list[Entry] = []
    with os.scandir(run_dir) as top:
        for item in top:
            entry = Entry(item.name, _kind(item))
            entries.append(entry)
            if entry.kind is Kind.DIR and item.name in job_ids:
                with os.scandir(item.path) as inner:
                    entries += [Entry(f"{item.name}/{sub.name}", _kind(sub)) for sub in inner]
    return entries


def is_marked(run_dir: Path) -> bool:
    return (run_dir / MARKER_NAME).is_file() or (run_dir / LEDGER_NAME).is_file()


def claim_run_dir(run_dir: Path, job_ids: Collection[str], *, force: bool = False) -> RunDirVerdict:
    """Check `run_dir` before a run writes anything into it, and mark it as a run directory.

    A folder holding files lipsync did not create is refused (ConfigError, exit 6) unless `force`; with
    `force` the verdict's `foreign` paths are what the run must never delete or overwrite."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: the run's output folder is a file; choose another output")
    verdict = judge_run_dir(list_run_dir(run_dir, job_ids), job_ids, is_marked(run_dir))
    if not verdict.ok and not force:
        shown = ", ".join(verdict.foreign[:SHOWN_FOREIGN])
        more = f" and {len(verdict.foreign) - SHOWN_FOREIGN} more" if len(verdict.foreign) > SHOWN_FOREIGN else ""
        raise ConfigError(
            f"{run_dir}: {verdict.reason} ({shown}{more}); choose an empty or new output folder, "
            f"or pass --force (which never deletes or overwrites them)"
        )
    write_text_atomic(
        run_dir / MARKER_NAME,
        json.dumps({"tool": "lipsync", "kind": "run directory", "foreign": list(verdict.foreign)}) + "\n",
    )
    return verdict


def recorded_foreign(run_dir: Path) -> tuple[str, ...]:
    """The paths the last run found in `run_dir` and did not write (its marker keeps them for later writers:
    a review, a report), so nothing of the user's is ever overwritten."""
    try:
        marker = json.loads((run_dir / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    foreign = marker.get("foreign") if isinstance(marker, dict) else None
    return tuple(str(p) for p in foreign) if isinstance(foreign, list) else ()


def refresh_checksums(run_dir: Path) -> Path | None:
    """`checksums.sha256` over exactly what the run's done jobs delivered (by the ledger and their manifests),
    never over or onto a file the user put there; None when it is not ours to write."""
    from ..stages.handoff import delivered_files, write_checksums
    from .ledger import Stage, has_ledger, open_run_ledger

    if not has_ledger(run_dir):
        return None
    ledger = open_run_ledger(run_dir)
    try:
        done = {row.job_id for row in ledger.jobs() if row.stage is Stage.DONE}
    finally:
        ledger.close()
    if not done:
        return None
    delivered = [f for f in delivered_files(run_dir) if f.split("/")[0] in done]
    try:
        return write_checksums(run_dir, delivered, protected=recorded_foreign(run_dir))
    except ValidationError as err:  # the user's own checksums.sha256 (a run with --force): theirs stays
        log.warning("%s", err.render())
        return None


def stale_temps(folder_entries: Iterable[Entry], foreign: Collection[str]) -> list[str]:
    """The temp files of our own interrupted writes among `folder_entries` (paths relative to the run
    directory), never one of the `foreign` paths: what a resumed run may delete."""
    return sorted(
        e.path
        for e in folder_entries
        if e.kind is Kind.FILE and e.path not in foreign and _is_temp_name(e.path.rsplit("/", 1)[-1])
    )


def _is_temp_name(name: str) -> bool:
    return any(is_temp_of(name, final) for final in (*JOB_FILES, CHECKSUMS_NAME))


def archive_delivery(run_dir: Path, job_id: str, take: int) -> Path | None:
    """Keep what `<job>/` delivered (by its manifest, and the manifest) as `<job>/take-<take>/` before a new
    take is delivered over it; None when there is nothing to keep. Hard links gathered under `.work/`, then
    moved in with one rename: at every instant the delivery is whole in the job folder, in the archive, or
    in both, and a kill anywhere leaves nothing a rerun cannot redo. An archive already there is final."""
    from ..stages.handoff import previously_delivered

    job_dir = run_dir / job_id
    archive = job_dir / f"take-{take}"
    names = previously_delivered(job_dir)
    if archive.exists() or not names:
        return None
    staging = run_dir / WORK_DIR / job_id / archive.name
    shutil.rmtree(staging, ignore_errors=True)  # a killed archive's partial links
    staging.mkdir(parents=True)
    for name in sorted(names | {MANIFEST_NAME}):
        if (job_dir / name).is_file():
            os.link(job_dir / name, staging / name)
    os.rename(staging, archive)
    return archive
