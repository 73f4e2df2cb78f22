"""`lipsync review`: the report served on loopback, with approve / reject-with-a-note per job.

Pages (images, plots, figures) are collected once at start; reviews are read from the ledger on every page
view, so a decision shows at once. Files are served only from inside the run directory: a path that is
absolute, climbs out with `..`, or resolves (through a symlink) outside it is refused with 404.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import LipsyncError, ToolError
from ..run.reviews import Decision, Reviews
from .page import collect, render_page

log = logging.getLogger("lipsync.review")


def run_file(run_dir: Path, requested: str) -> Path | None:
    """The file `requested` (a URL path) names inside `run_dir`, or None when it is not one we serve."""
    if not requested or requested.startswith(("/", "\\")) or "\\" in requested or ":" in requested:
        return None
    parts = requested.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    root = run_dir.resolve()
    path = (root / requested).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def build_app(run_dir: str | Path) -> Starlette:
    run_dir = Path(run_dir)
    reviews = Reviews(run_dir)
    pages = collect(run_dir)
    job_ids = {p.job.row.job_id for p in pages}

    async def index(_request: Request) -> Response:
        return HTMLResponse(render_page(run_dir, pages, reviews.all(), interactive=True))

    async def review(request: Request) -> Response:
        form = await request.form()
        job, decision, note = (str(form.get(k, "")) for k in ("job", "decision", "note"))
        if job not in job_ids:
            return PlainTextResponse("no such job in this run", status_code=404)
        try:
            reviews.decide(job, Decision(decision), note)
        except ValueError:
            return PlainTextResponse("decision must be approved or rejected", status_code=400)
        except LipsyncError as err:
            return PlainTextResponse(err.render(), status_code=400)
        return RedirectResponse(f"./#job-{job}", status_code=303)

    async def files(request: Request) -> Response:
        path = run_file(run_dir, request.path_params["path"])
        if path is None:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path)

    return Starlette(
        routes=[Route("/", index), Route("/review", review, methods=["POST"]), Route("/{path:path}", files)]
    )


class ReviewServer:
    """The review app on `host:port` in a background thread (port 0: any free port). A context manager."""

    def __init__(self, run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0):
        config = uvicorn.Config(
            build_app(run_dir),
            host=host,
            port=port,
            log_config=None,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="review-server", daemon=True)
        self.host = host
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def __enter__(self) -> ReviewServer:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise ToolError(f"review: could not listen on {self.host}")
            self._thread.join(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def wait(self) -> None:
        """Until the server stops (Ctrl-C in the caller)."""
        self._thread.join()

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(5)
