"""The run report: `write_report(run_dir)` → run_dir/report.html, one self-contained page for an editor.

Per job: poster frame and contact sheet (inline data URIs), the source segment and the final side by side
(players referencing files inside the run directory, relatively), the segment timeline with the conform's
reasons, master vs provider audio, mouth opening vs speech envelope, the verification table, cost and the
provider job ids. Read from the ledger (read-only) and each job's manifest.json. `render_page(...,
review=True)` adds the approve / reject controls that `lipsync review` serves.
"""

from ..run.rundir import REPORT_NAME
from .page import collect, render_page, write_report

__all__ = ["REPORT_NAME", "collect", "render_page", "write_report"]
