"""Config-driven batch runs: `load_config(path)` → `run_batch(config, RunOptions(...), progress)` → `RunSummary`;
`read_status(run_dir)` for where a run stands. See docs/DESIGN.md, "Batch runs"."""

from .config import JobSpec, RunConfig, load_config
from .ledger import read_status
from .progress import Progress, make_progress
from .runner import RunOptions, RunSummary, run_batch

__all__ = [
    "JobSpec",
    "Progress",
    "RunConfig",
    "RunOptions",
    "RunSummary",
    "load_config",
    "make_progress",
    "read_status",
    "run_batch",
]
