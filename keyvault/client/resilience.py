"""Retry policy and circuit breaker for the thin client: plain objects, time injected.

Why not httpx-retries or pybreaker: the retry rule here depends on the method *and* the
outcome together (POST is retried on 429/503 and on a connection refused before anything
was sent, never on a 500), which RetryTransport's per-method allow-list cannot say; and
one breaker must serve sync and async clients alike. Both fit in a few dozen lines that
take their clock, sleep and randomness as parameters, like tenacity's ``sleep=``.
"""

from __future__ import annotations

import email.utils
import enum
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import msgspec

from keyvault.errors import CircuitOpenError

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: a 500 is usually a bug upstream, not a blip: not retried unless configured
RETRY_STATUSES = frozenset({429, 502, 503, 504, 529})
#: statuses after which repeating even a non-idempotent request is safe: the server says
#: it did not process it
SAFE_FOR_ANY_METHOD = frozenset({429, 503})
#: outcomes that count against the breaker: the upstream is failing, not refusing us
FAILURE_STATUSES = frozenset({500, 502, 503, 504, 529})


class TransportErrors(msgspec.Struct, frozen=True):
    """Which exceptions mean "the network failed", and which of them "before sending".
    httpx and httpx2 (the Anthropic SDK's) have the same tree under different modules."""

    transport: tuple[type[Exception], ...]
    not_sent: tuple[type[Exception], ...]


HTTPX_ERRORS = TransportErrors((httpx.TransportError,), (httpx.ConnectError, httpx.ConnectTimeout))


def retry_after_seconds(
    value: str | None, now: Callable[[], datetime] | None = None
) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date. None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now() if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


class RetryPolicy(msgspec.Struct, frozen=True):
    """Exponential backoff with full jitter, honouring Retry-After, for safe requests only."""

    max_attempts: int = 3  # in all, the first one included
    backoff: float = 1.0  # seconds; attempt n waits up to backoff * 2**n
    max_backoff: float = 8.0
    max_retry_after: float = 60.0  # a longer Retry-After is not waited for: fail instead
    statuses: frozenset[int] = RETRY_STATUSES
    #: also repeat non-idempotent methods (POST) after a failure: for APIs where a repeated
    #: request does no harm (the Claude API), never for one where it pays twice
    all_methods: bool = False
    rng: Callable[[], float] = random.random

    def _repeatable(self, method: str) -> bool:
        return self.all_methods or method.upper() in IDEMPOTENT_METHODS

    def retry_status(self, method: str, status: int, attempt: int) -> bool:
        if attempt + 1 >= self.max_attempts or status not in self.statuses:
            return False
        return self._repeatable(method) or status in SAFE_FOR_ANY_METHOD

    def retry_error(
        self,
        method: str,
        exc: Exception,
        attempt: int,
        errors: TransportErrors | None = None,
    ) -> bool:
        kinds = errors or HTTPX_ERRORS
        if attempt + 1 >= self.max_attempts or not isinstance(exc, kinds.transport):
            return False
        if isinstance(exc, kinds.not_sent):
            return True
        return self._repeatable(method)

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None when Retry-After is too long."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return float(self.rng()) * min(self.max_backoff, self.backoff * 2.0**attempt)


NO_RETRIES = RetryPolicy(max_attempts=1)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after ``cooldown``
    (one trial request) → closed on its success, open again on its failure."""

    CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

    def __init__(
        self,
        name: str = "",
        *,
        threshold: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._state == self.OPEN and self._clock() - self._opened_at >= self.cooldown:
                return self.HALF_OPEN
            return self._state

    def before_request(self) -> None:
        """Raise CircuitOpenError unless a request may go out now."""
        with self._lock:
            if self._state == self.CLOSED:
                return
            if self._state == self.OPEN:
                waited = self._clock() - self._opened_at
                if waited < self.cooldown:
                    raise CircuitOpenError(
                        f"circuit open for {self.name}: {self._failures} consecutive failures; "
                        f"retrying in {self.cooldown - waited:.1f}s"
                    )
                self._set(self.HALF_OPEN)
            if self._trial_in_flight:
                raise CircuitOpenError(
                    f"circuit half-open for {self.name}: a trial request is in flight"
                )
            self._trial_in_flight = True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._trial_in_flight = False
            if self._state != self.CLOSED:
                self._set(self.CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_in_flight = False
            if self._state == self.HALF_OPEN or self._failures >= self.threshold:
                self._opened_at = self._clock()
                if self._state != self.OPEN:
                    self._set(self.OPEN)

    def abandon(self) -> None:
        """The request ended in neither success nor failure (e.g. no key could be read):
        free the half-open trial slot without judging the upstream."""
        with self._lock:
            self._trial_in_flight = False

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
