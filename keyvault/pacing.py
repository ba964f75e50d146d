"""Pacing writes under a backend's quota: a token bucket shared by all work in a process.

AWS Secrets Manager allows PutSecretValue, UpdateSecretVersionStage and UpdateSecret 50
requests a second together, per account and region (TagResource another 50); a sweep over a
fleet that wrote as fast as it could would be throttled. A pacer hands out one token per
write at ``rate`` a second, evenly spaced (no burst: any one-second window then holds at most
``rate`` writes), blocking the caller until its turn, so every thread of the sweep stays under
the quota together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pacer:
    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("a write rate must be above 0")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = 1.0
        self._last = clock()
        self.waited = 0.0  # seconds callers spent waiting: what pacing cost

    def take(self) -> None:
        """Wait for one write's turn (no wait without a rate)."""
        if self.rate is None:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(1.0, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            self.waited += wait
        if wait:
            self._sleep(wait)
