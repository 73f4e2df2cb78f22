"""`make demo`: run configs/demo.toml as a rehearsal and say where the deliverables are.

The same as `lipsync run configs/demo.toml --rehearse`: the committed samples (a presenter clip with a voice
track, the presenter with a multi-chunk script, a rotated phone clip with a Chinese script and with a one-line
script, and a drawn presenter still animated into a talking portrait) go through three providers' protocols
(PixVerse Platform, fal.ai, AI/ML API) on the local emulator. No credits, no network, the same code path as a
real run.
Running it again resumes: finished jobs are kept, nothing is done twice.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .cli import setup_logging
from .errors import LipsyncError
from .run.config import load_config
from .run.progress import make_progress, summary_lines
from .run.runner import RunOptions, run_batch

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.toml"


def main() -> int:
    setup_logging()
    try:
        config = load_config(DEMO_CONFIG)
        with make_progress() as progress:
            summary = run_batch(config, RunOptions(rehearse=True), progress)
    except LipsyncError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return err.exit_code
    per_job = not progress.lists_jobs_above_stdout()
    print("\n".join(summary_lines(summary, per_job=per_job, config="configs/demo.toml --rehearse")))
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
