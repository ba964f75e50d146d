"""The thin client: ``httpx.Client``/``AsyncClient`` subclasses whose ``send`` wraps every
request in a concurrency limit, a circuit breaker and the retry policy, with the key auth
flow inside each attempt (so a retry always carries the freshest key).

Wrapping ``send`` rather than the transport keeps every httpx option working unchanged,
proxies from the environment, mounts and custom transports included.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx

from keyvault.client.auth import FINGERPRINT_EXTENSION
from keyvault.client.limiter import KeyLimiter
from keyvault.client.metrics import ClientMetrics
from keyvault.client.resilience import (
    FAILURE_STATUSES,
    HTTPX_ERRORS,
    CircuitBreaker,
    RetryPolicy,
    TransportErrors,
    retry_after_seconds,
)


class _Response(Protocol):
    status_code: int

    def close(self) -> None: ...


R = TypeVar("R", bound=_Response)
#: answers whose Retry-After pauses the whole key, not just this request
PAUSE_STATUSES = frozenset({429, 529})
#: one attempt's result, as the retry loop receives it
Outcome = tuple[Any, Exception | None]


async def _asleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass
class Resilience:
    """Everything around an attempt: one per client, around the key's shared limiter."""

    retry: RetryPolicy
    breaker: CircuitBreaker
    metrics: ClientMetrics
    limiter: KeyLimiter
    errors: TransportErrors = HTTPX_ERRORS
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[None]] = field(default_factory=lambda: _asleep)

    # the decision after one attempt, shared by sync and async -------------------------------

    def _judge(
        self,
        request: Any,
        attempt: int,
        response: Any,
        error: Exception | None,
        started: float,
    ) -> float | None:
        """Record the attempt; return the delay before retrying, or None to stop."""
        fingerprint = request.extensions.get(FINGERPRINT_EXTENSION, "none")
        elapsed = time.perf_counter() - started
        if error is not None:
            if isinstance(error, self.errors.transport):
                self.breaker.record_failure()
            else:
                self.breaker.abandon()
            self.metrics.request(fingerprint, type(error).__name__, elapsed)
            if not self.retry.retry_error(request.method, error, attempt, self.errors):
                return None
            delay = self.retry.delay(attempt)
            reason = type(error).__name__
        else:
            assert response is not None
            status = response.status_code
            if status in FAILURE_STATUSES:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()
            self.metrics.request(fingerprint, status, elapsed)
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            if status in PAUSE_STATUSES and retry_after:
                self.limiter.pause(min(retry_after, self.retry.max_retry_after))
                self.metrics.paused(retry_after)
            if not self.retry.retry_status(request.method, status, attempt):
                return None
            delay = self.retry.delay(attempt, retry_after)
            reason = str(status)
        if delay is not None:
            self.metrics.retry(reason, delay)
        return delay

    def _attempts(self, request: Any, queued_at: float) -> Generator[float | None, Outcome, Any]:
        """The retry loop without I/O (the auth-flow pattern): the driver sends each
        attempt's ``(response, error)``; the loop answers with the delay before the next
        attempt, or ends with the response, or raises the error. One loop for sync and
        async; the drivers only send, close and sleep."""
        attempt = 0
        while True:
            self.breaker.before_request()
            started = queued_at if attempt == 0 else time.perf_counter()
            response, error = yield None
            delay = self._judge(request, attempt, response, error, started)
            if delay is None:
                if error is not None:
                    raise error
                return response
            yield delay
            attempt += 1

    def run(self, request: Any, send_once: Callable[[], R]) -> R:
        queued_at = time.perf_counter()
        self.limiter.acquire()
        try:
            paused = self.limiter.pause_left()
            if paused:
                self.sleep(paused)
            self.metrics.queue_wait(time.perf_counter() - queued_at)
            attempts = self._attempts(request, queued_at)
            next(attempts)
            while True:
                outcome: Outcome
                try:
                    outcome = (send_once(), None)
                except Exception as exc:
                    outcome = (None, exc)
                try:
                    delay = attempts.send(outcome)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                if outcome[0] is not None:
                    outcome[0].close()
                self.sleep(max(delay or 0.0, self.limiter.pause_left()))
                next(attempts)
        finally:
            self.limiter.release()

    async def run_async(
        self, request: httpx.Request, send_once: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        queued_at = time.perf_counter()
        await self.limiter.acquire_async()
        try:
            paused = self.limiter.pause_left()
            if paused:
                await self.async_sleep(paused)
            self.metrics.queue_wait(time.perf_counter() - queued_at)
            attempts = self._attempts(request, queued_at)
            next(attempts)
            while True:
                outcome: Outcome
                try:
                    outcome = (await send_once(), None)
                except Exception as exc:
                    outcome = (None, exc)
                try:
                    delay = attempts.send(outcome)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                if outcome[0] is not None:
                    await outcome[0].aclose()
                await self.async_sleep(max(delay or 0.0, self.limiter.pause_left()))
                next(attempts)
        finally:
            self.limiter.release()


class KeyvaultClient(httpx.Client):
    """An ``httpx.Client`` that sends one keyvault key and survives rotations and outages."""

    def __init__(self, *, resilience: Resilience, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
        super().__init__(**kwargs)
        self.resilience = resilience

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        parent = super().send
        return self.resilience.run(request, lambda: parent(request, **kwargs))


class AsyncKeyvaultClient(httpx.AsyncClient):
    """The async twin of :class:`KeyvaultClient`."""

    def __init__(self, *, resilience: Resilience, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
        super().__init__(**kwargs)
        self.resilience = resilience

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        parent = super().send
        return await self.resilience.run_async(request, lambda: parent(request, **kwargs))
