"""The ASGI app: the four protocols under their prefixes, plus /files for uploads and results."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from . import aimlapi, fal, pixverse, useapi
from .state import ConnectionDropped, EmulatorState, state_of

_CHUNK = 1 << 16


class TruncatedFileResponse(Response):
    """Announces the whole file in Content-Length, sends about half of it, then breaks the connection."""

    def __init__(self, path: Path, media_type: str) -> None:
        self.path = path
        self.size = path.stat().st_size
        super().__init__(media_type=media_type, headers={"content-length": str(self.size)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        with open(self.path, "rb") as f:
            await send({"type": "http.response.body", "body": f.read(self.size // 2), "more_body": True})
        raise ConnectionDropped("emulator fault: result download truncated")


async def serve_file(request: Request) -> Response:
    state = state_of(request)
    stored = state.files.get(request.path_params["name"])
    if stored is None:
        return Response("not found", status_code=404, media_type="text/plain")
    if stored.is_result and request.method == "GET" and state.faults[stored.provider].take("truncate_downloads"):
        return TruncatedFileResponse(stored.path, stored.content_type)
    return FileResponse(stored.path, media_type=stored.content_type)


def build_app(state: EmulatorState) -> Starlette:
    app = Starlette(
        routes=[
            Mount("/pixverse", routes=pixverse.ROUTES),
            Mount("/aimlapi", routes=aimlapi.ROUTES),
            Mount("/useapi", routes=useapi.ROUTES),
            Mount("/fal/queue", routes=fal.QUEUE_ROUTES),
            Mount("/fal/rest", routes=fal.STORAGE_ROUTES),
            Mount("/fal/cdn", routes=fal.CDN_ROUTES),
            Route("/files/{name}", serve_file, methods=["GET", "HEAD"]),
        ]
    )
    app.state.emulator = state
    return app
