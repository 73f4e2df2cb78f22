"""`Emulator`: the app served by uvicorn in a background thread on loopback, for tests and rehearsals."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvicorn
from starlette.requests import ClientDisconnect

from ..errors import ToolError
from .app import build_app
from .faults import Faults
from .jobs import Job
from .state import PROVIDERS, ConnectionDropped, EmulatorSettings, EmulatorState

log = logging.getLogger("lipsync.emulator")

ENV_BASE_VARS = {
    "pixverse": "LIPSYNC_PIXVERSE_BASE_URL",
    "aimlapi": "LIPSYNC_AIMLAPI_BASE_URL",
    "useapi": "LIPSYNC_USEAPI_BASE_URL",
    "fal_queue": "LIPSYNC_FAL_QUEUE_URL",
    "fal_storage": "LIPSYNC_FAL_STORAGE_URL",
}
KEY_VARS = {"pixverse": "PIXVERSE_API_KEY", "aimlapi": "AIMLAPI_KEY", "useapi": "USEAPI_TOKEN", "fal": "FAL_KEY"}


class _HideDeliberateDrops(logging.Filter):
    """uvicorn logs a traceback when a handler raises; our deliberate connection drops are not errors, nor is
    a client that hangs up mid-request (a killed `lipsync`, in the crash tests and `make chaos`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], (ConnectionDropped, ClientDisconnect)))


def _quiet_uvicorn() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDeliberateDrops) for f in logger.filters):
        logger.addFilter(_HideDeliberateDrops())


class Emulator:
    """The four provider protocols on one loopback port. Use as a context manager, or start()/stop()."""

    def __init__(self, settings: EmulatorSettings | None = None):
        self.settings = settings or EmulatorSettings()
        self._own_workdir = self.settings.workdir is None
        self.workdir = Path(self.settings.workdir or tempfile.mkdtemp(prefix="lipsync-emulator-"))
        self._executor = ThreadPoolExecutor(self.settings.render_workers, thread_name_prefix="emulator-render")
        self.state = EmulatorState(self.settings, self.workdir, self._executor)
        self.app = build_app(self.state)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # ---- lifecycle
    def start(self) -> Emulator:
        _quiet_uvicorn()
        config = uvicorn.Config(
            self.app,
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="emulator-server", daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                self.stop()
                raise ToolError(f"emulator could not listen on {self.settings.host}:{self.settings.port}")
            self._thread.join(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        log.debug("emulator listening on %s", self.root)
        return self

    def _serve(self) -> None:
        assert self._server is not None  # start() made it before starting this thread
        try:
            self._server.run()
        except SystemExit:  # uvicorn exits when it cannot bind; start() turns that into a ToolError
            log.debug("emulator server thread exited early")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None  # started with the server
            self._thread.join(10)
            self._server = None
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C raises KeyboardInterrupt here, in the main thread)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- addresses
    @property
    def root(self) -> str:
        host = self.settings.host if self.settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def base_urls(self) -> dict[str, str]:
        return {
            "pixverse": f"{self.root}/pixverse",
            "aimlapi": f"{self.root}/aimlapi",
            "useapi": f"{self.root}/useapi",
            "fal_queue": f"{self.root}/fal/queue",
            "fal_storage": f"{self.root}/fal/rest",
        }

    def credentials(self) -> dict[str, str]:
        """A key each provider accepts (handed to adapters in-process, e.g. by a rehearsal)."""
        keys = self.settings.api_keys or {}
        return {provider: keys.get(provider, f"test-{provider}-key") for provider in KEY_VARS}

    def env(self) -> dict[str, str]:
        """Environment for a subprocess client: base URLs and a key each provider accepts."""
        env = {ENV_BASE_VARS[name]: url for name, url in self.base_urls.items()}
        env.update({KEY_VARS[provider]: key for provider, key in self.credentials().items()})
        return env

    # ---- control and inspection
    def faults(self, provider: str) -> Faults:
        return self.state.faults[_known(provider)]

    def accepted_creates(self, provider: str) -> int:
        return self.state.jobs[_known(provider)].accepted()

    def jobs(self, provider: str) -> list[Job]:
        return self.state.jobs[_known(provider)].all()


def _known(provider: str) -> str:
    if provider not in PROVIDERS:
        raise KeyError(f"unknown provider {provider!r}; the emulator serves {', '.join(PROVIDERS)}")
    return provider
