"""`make demo`: run configs/demo.toml as a rehearsal and say where the deliverables are.

The same as `lipsync run configs/demo.toml --rehearse`: the committed samples (a presenter clip with a voice
track, the presenter with a multi-chunk script, a rotated phone clip with a Chinese script and with a one-line
script) go through two providers' protocols (PixVerse Platform, fal.ai) on the local emulator. No credits, no network, the same code path as a real run.
Running it again resumes: finished jobs are kept, nothing is done twice.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .cli import setup_logging
from .errors import LipsyncError
from .run.config import load_config
from .run.progress import make_progress
from .run.runner import RunOptions, RunSummary, run_batch

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.toml"


def describe(summary: RunSummary) -> list[str]:
    lines = []
    for o in summary.outcomes:
        if o.final is not None:
            lines.append(f"  {o.job_id:<16} {o.provider:<9} {o.final}  (+ manifest.json)")
        else:
            lines.append(f"  {o.job_id:<16} {o.provider:<9} {o.stage.value}: {o.error}")
    lines.append(f"checksums: {summary.checksums}" if summary.checksums else "no job was delivered")
    lines.append(f"status:    lipsync status {summary.run_dir}")
    return lines


def main() -> int:
    setup_logging()
    try:
        config = load_config(DEMO_CONFIG)
        with make_progress() as progress:
            summary = run_batch(config, RunOptions(rehearse=True), progress)
    except LipsyncError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return err.exit_code
    done = sum(1 for o in summary.outcomes if o.final is not None)
    print(f"demo: {done}/{len(summary.outcomes)} jobs delivered in {summary.run_dir} ({summary.seconds:.0f} s, rehearsal)")
    print("\n".join(describe(summary)))
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
