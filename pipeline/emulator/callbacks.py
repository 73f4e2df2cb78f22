"""Completion callbacks: useapi's `replyUrl` and fal's `?fal_webhook=`. One POST when the job ends, sent
only to loopback URLs (the emulator never reaches the internet). Unsigned: clients must re-check by polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from .inputs import is_loopback
from .jobs import FINAL_PHASES, Job, Phase, phase_at
from .state import EmulatorState

log = logging.getLogger("lipsync.emulator.callbacks")
_TICK_S = 0.05


def notify_when_final(state: EmulatorState, job: Job, url: str, body: Callable[[Phase], dict[str, Any]]) -> None:
    """Schedule one POST of `body(final phase)` to `url` once `job` is final."""
    if not is_loopback(urlsplit(url).hostname):
        log.info("%s job %s: not calling back %s (only loopback is reachable)", job.provider, job.job_id, url)
        return
    task = asyncio.get_running_loop().create_task(_notify(job, url, body))
    state.background.add(task)
    task.add_done_callback(state.background.discard)


async def _notify(job: Job, url: str, body: Callable[[Phase], dict[str, Any]]) -> None:
    while (phase := phase_at(job, time.monotonic())) not in FINAL_PHASES:
        await asyncio.sleep(_TICK_S)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await client.post(url, json=body(phase))
    except httpx.HTTPError as exc:
        log.info("%s job %s: callback to %s failed: %s", job.provider, job.job_id, url, type(exc).__name__)
