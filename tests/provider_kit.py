"""Helpers for the provider adapter tests (tests/test_providers_*.py, test_download.py, test_secrets.py).

Scripted HTTP server on loopback:  with serve(handler) as srv: srv.url, srv.requests
    handler(req: Seen) -> Reply | None   (None = drop the connection without answering)
ASGI app on loopback (a router that decodes paths the standard way):
                                   with serve_app(starlette_app) as url: ...
Recording client:                  client, log = recording_client()   (every request the adapter sent)
Tiny media:                        tiny_media(dir) -> (video.mp4, audio.wav)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import uvicorn
from media import make_audio, make_video

from pipeline.providers import make_client


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    send_bytes: int | None = None  # send only this many body bytes, then close (Content-Length stays)


@dataclass
class Server:
    url: str
    requests: list[Seen]


@contextlib.contextmanager
def serve(handler: Callable[[Seen], Reply | None]) -> Iterator[Server]:
    """A threaded HTTP/1.1 server on 127.0.0.1 answering every request with `handler`."""
    seen: list[Seen] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            seen.append(req)
            reply = handler(req)
            if reply is None:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.send_response(reply.status)
            headers = {"Content-Length": str(len(reply.body)), **reply.headers}
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            body = reply.body if reply.send_bytes is None else reply.body[: reply.send_bytes]
            self.wfile.write(body)
            if reply.send_bytes is not None:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)

        do_GET = do_POST = do_PUT = _any

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", seen)
    finally:
        httpd.shutdown()
        httpd.server_close()


def recording_client() -> tuple[httpx.Client, list[httpx.Request]]:
    """The adapters' own client, with an event hook that keeps every request it sends."""
    log: list[httpx.Request] = []
    return make_client(timeout=30.0, event_hooks={"request": [log.append]}), log


def tiny_media(d: Path) -> tuple[Path, Path]:
    video = make_video(d / "talk.mp4", seconds=1.0, width=160, height=120, fps=15)
    audio = make_audio(d / "voice.wav", seconds=1.0, rate=24000)
    return video, audio


def mp4_bytes(d: Path) -> bytes:
    """A small real MP4 (for download tests)."""
    return make_video(d / "result.mp4", seconds=0.5, width=64, height=48, fps=10).read_bytes()


@contextlib.contextmanager
def serve_app(app) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, in a thread; yields its root URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        thread.join(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def create_job(provider, request, *, reply_ref: str | None = None):
    """Create one job through the flow's recorded create (in a throwaway ledger) and return its handle:
    for tests of an adapter's protocol that poll or inspect the job themselves."""
    import tempfile
    import uuid

    from pipeline.providers.base import JobHandle
    from pipeline.providers.flow import ProviderJobFlow, SegmentJob
    from pipeline.providers.sqlite_store import SqliteStore
    from pipeline.providers.store import SegmentRef

    key = uuid.uuid4().hex
    folder = Path(tempfile.mkdtemp(prefix="lipsync-create-"))
    job = SegmentJob(
        key, SegmentRef("test", key, 0, provider.name), request, reply_ref or f"test/{key}", folder / "result.mp4"
    )
    with SqliteStore(folder / "ledger.sqlite") as store:
        record = ProviderJobFlow(provider, store).create(job)
    return JobHandle.from_dict(record.handle)


def run_job(provider, request, dst: Path, *, on_handle=None, on_status=None):
    """One job end to end through the flow, recorded beside `dst` (what `lipsync submit` does)."""
    from pipeline.providers.flow import FlowHooks
    from pipeline.submit import submit

    hooks = FlowHooks(**{k: v for k, v in (("on_created", on_handle), ("on_status", on_status)) if v})
    return submit(provider, request, dst, hooks=hooks)
