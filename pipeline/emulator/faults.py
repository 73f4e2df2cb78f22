"""Fault injection, set per provider on a running emulator. Counters are consumed one request at a time."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Faults:
    """What goes wrong for one provider. Mutable while the emulator runs; read on the next request.

    Counters (`rate_limit_creates`, `server_errors`, `drop_after_create`, `error_after_create`, `stall_jobs`,
    `truncate_downloads`, `break_status_streams`) count down as they fire. Flags are captured into a job when
    it is created, so changing them later does not change a job already running.
    """

    rate_limit_creates: int = 0  # next N creates refused (PixVerse ErrCode 500044, others HTTP 429); not counted
    server_errors: int = 0  # next N requests of any kind answer 5xx
    slow_reply_s: float = 0.0  # every reply delayed
    drop_after_create: int = 0  # next N accepted creates: job created and counted, connection then dropped
    error_after_create: int = 0  # next N accepted creates: job created and counted, then a gateway's 502
    stall_jobs: int = 0  # next N accepted jobs stay running `stall_s` longer (stuck for a while)
    stall_s: float = 5.0
    truncate_downloads: int = 0  # next N result downloads stop short of Content-Length
    break_status_streams: int = 0  # next N status streams (fal) drop the connection after their first event
    moderate: bool = False  # jobs end moderated
    fail_generation: bool = False  # jobs end failed
    flap_status: bool = False  # status lies for a moment before the real final state
    stuck: bool = False  # jobs never finish
    out_of_credits: bool = False  # creates refused with the provider's billing error
    audio_offset_ms: int = 0  # result audio delayed by this many ms (negative: early, its start cut)
    account_error: bool = False  # the account needs a human (useapi 596; others their locked-account error)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, counter: str) -> bool:
        """Consume one unit of a countdown fault; True if it fires for this request."""
        with self._lock:
            left = getattr(self, counter)
            if left > 0:
                setattr(self, counter, left - 1)
                return True
            return False

    def clear(self) -> None:
        """Back to a fault-free provider."""
        fresh = Faults()
        for name in self.__dataclass_fields__:
            if not name.startswith("_"):
                setattr(self, name, getattr(fresh, name))
