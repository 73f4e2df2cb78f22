"""Provider adapters: one module per provider, one job model (`base.py`), one flow (`flow.py`), and the
registry here, built from what each adapter class declares about itself.

    provider = get_provider("fal", credential=key, base_urls=emu.base_urls)
    flow = ProviderJobFlow(provider, store)          # store: a Ledger (run/ledger.py)
    result = flow.run(SegmentJob(key, ref, JobRequest(video, audio), reply_ref, dst))

Base URLs: explicit argument (config) > environment (`LIPSYNC_*_BASE_URL`, `LIPSYNC_FAL_*_URL`) > the
real hosts. A base URL is scheme + host, optionally with a path prefix; adapters append the documented
paths to it. Credentials are handed in; `credential_from_env` is how the CLI reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import ConfigError
from ..secrets import REGISTRY
from .aimlapi import AimlapiProvider
from .base import Download, JobHandle, JobRequest, JobState, JobStatus, Provider, Voice
from .fal import FalProvider
from .http import RetriesExhausted, RetryPolicy, make_client
from .pixverse import PixverseProvider
from .poll import PollPolicy, wait_for_job
from .useapi import UseapiProvider

PROVIDERS: dict[str, type[Provider]] = {
    cls.name: cls for cls in (PixverseProvider, AimlapiProvider, UseapiProvider, FalProvider)
}
PROVIDER_NAMES = tuple(PROVIDERS)
BASE_URL_KEYS = tuple(key for cls in PROVIDERS.values() for key in cls.base_url_defaults)

__all__ = [
    "BASE_URL_KEYS",
    "PROVIDERS",
    "PROVIDER_NAMES",
    "Download",
    "JobHandle",
    "JobRequest",
    "JobState",
    "JobStatus",
    "PollPolicy",
    "Provider",
    "RetriesExhausted",
    "RetryPolicy",
    "Voice",
    "credential_from_env",
    "get_provider",
    "make_client",
    "provider_class",
    "resolve_base_urls",
    "wait_for_job",
]


def provider_class(name: str) -> type[Provider]:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ConfigError(f"unknown provider {name!r}; choose one of {', '.join(PROVIDER_NAMES)}") from None


def resolve_base_urls(
    name: str, explicit: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The base URLs provider `name` uses: explicit > environment > default, for each of its keys."""
    env = os.environ if env is None else env
    cls = provider_class(name)
    return {
        key: (explicit or {}).get(key) or env.get(cls.base_url_env[key], "").strip() or default
        for key, default in cls.base_url_defaults.items()
    }


def credential_from_env(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The provider's key from its environment variable (None when unset): read once, by the caller."""
    value = (os.environ if env is None else env).get(provider_class(name).secret_env, "").strip()
    REGISTRY.add(value)  # whatever echoes it back later is redacted
    return value or None


def get_provider(
    name: str,
    *,
    credential: str | None,
    base_urls: Mapping[str, str] | None = None,
    poll: PollPolicy | None = None,
    client_timeout: float | httpx.Timeout | None = None,
    retry: RetryPolicy | None = None,
    create_retry: RetryPolicy | None = None,
    client: httpx.Client | None = None,
    **options: Any,
) -> Provider:
    """The adapter for `name`, talking to `base_urls` (resolved against the environment and the real
    hosts) with `credential`. `options` are provider-specific (useapi: max_jobs, email); `client` lets a
    caller wrap the transport (tests record every request)."""
    cls = provider_class(name)
    return cls(
        credential=credential,
        base_urls=resolve_base_urls(name, base_urls),
        poll=poll,
        retry=retry,
        create_retry=create_retry,
        client=client,
        client_timeout=client_timeout,
        **options,
    )
