"""Provider adapters: one module per provider, one job model (`base.py`), one registry (here).

    provider = get_provider("fal", base_urls=emu.base_urls, poll=PollPolicy(initial=0.05))
    handle = provider.create(JobRequest(video, audio))     # the ledger stores handle.to_dict()
    status = wait_for_job(provider, handle)
    provider.download(status.result_url, dst, max_bytes=...)

Base URLs: explicit argument (config) > environment (`LIPSYNC_*_BASE_URL`, `LIPSYNC_FAL_*_URL`) > the
real hosts. A base URL is scheme + host, optionally with a path prefix; adapters append the documented
paths to it.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Mapping

import httpx

from ..errors import ConfigError
from .base import Download, JobHandle, JobRequest, JobState, JobStatus, Provider, Voice
from .http import RetriesExhausted, RetryPolicy, make_client
from .poll import PollPolicy, wait_for_job

PROVIDER_NAMES = ("pixverse", "aimlapi", "useapi", "fal")

DEFAULT_BASE_URLS: dict[str, str] = {
    "pixverse": "https://app-api.pixverse.ai",
    "aimlapi": "https://api.aimlapi.com",
    "useapi": "https://api.useapi.net",
    "fal_queue": "https://queue.fal.run",
    "fal_storage": "https://rest.fal.ai",
}
BASE_URL_ENV: dict[str, str] = {
    "pixverse": "LIPSYNC_PIXVERSE_BASE_URL",
    "aimlapi": "LIPSYNC_AIMLAPI_BASE_URL",
    "useapi": "LIPSYNC_USEAPI_BASE_URL",
    "fal_queue": "LIPSYNC_FAL_QUEUE_URL",
    "fal_storage": "LIPSYNC_FAL_STORAGE_URL",
}
URL_KEYS: dict[str, tuple[str, ...]] = {
    "pixverse": ("pixverse",), "aimlapi": ("aimlapi",), "useapi": ("useapi",), "fal": ("fal_queue", "fal_storage"),
}
# Per-provider poll cadence: PixVerse asks for 3-5 s; all start quick to catch early failures.
DEFAULT_POLL: dict[str, PollPolicy] = {
    "pixverse": PollPolicy(initial=3.0),
    "aimlapi": PollPolicy(),
    "useapi": PollPolicy(initial=3.0),
    "fal": PollPolicy(),
}
_CLASSES = {"pixverse": "PixverseProvider", "aimlapi": "AimlapiProvider", "useapi": "UseapiProvider",
            "fal": "FalProvider"}

__all__ = ["BASE_URL_ENV", "DEFAULT_BASE_URLS", "DEFAULT_POLL", "Download", "JobHandle", "JobRequest", "JobState", "JobStatus",
           "PROVIDER_NAMES", "PollPolicy", "Provider", "RetriesExhausted", "RetryPolicy", "Voice", "get_provider",
           "make_client", "resolve_base_urls", "wait_for_job"]


def resolve_base_urls(name: str, explicit: Mapping[str, str] | None = None,
                      env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The base URLs provider `name` uses: explicit > environment > default, for each of its keys."""
    env = os.environ if env is None else env
    return {key: (explicit or {}).get(key) or env.get(BASE_URL_ENV[key], "").strip() or DEFAULT_BASE_URLS[key]
            for key in URL_KEYS[name]}


def get_provider(name: str, *, base_urls: Mapping[str, str] | None = None, poll: PollPolicy | None = None,
                 client_timeout: float | httpx.Timeout | None = None, retry: RetryPolicy | None = None,
                 create_retry: RetryPolicy | None = None, client: httpx.Client | None = None,
                 **options: Any) -> Provider:
    """The adapter for `name`. `options` are provider-specific (useapi: max_jobs, email).

    `client` lets a caller wrap the transport (tests record every request); credentials are read from
    the environment when a request is made, so constructing a provider needs no key.
    """
    if name not in _CLASSES:
        raise ConfigError(f"unknown provider {name!r}; choose one of {', '.join(PROVIDER_NAMES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    cls = getattr(module, _CLASSES[name])
    return cls(base_urls=resolve_base_urls(name, base_urls), poll=poll or DEFAULT_POLL[name], retry=retry,
               create_retry=create_retry, client=client, client_timeout=client_timeout, **options)
