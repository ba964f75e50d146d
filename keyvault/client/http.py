"""The thin client: ``httpx.Client``/``AsyncClient`` subclasses whose ``send`` wraps every
request in a concurrency limit, a circuit breaker and the retry policy, with the key auth
flow inside each attempt (so a retry always carries the freshest key).

Wrapping ``send`` rather than the transport keeps every httpx option working unchanged,
proxies from the environment, mounts and custom transports included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx

from keyvault.client.auth import FINGERPRINT_EXTENSION
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
#: one attempt's result, as the retry loop receives it
Outcome = tuple[Any, Exception | None]

if TYPE_CHECKING:
    import asyncio


async def _asleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEFAULT_MAX_IN_FLIGHT = 5


@dataclass
class Resilience:
    """Everything around an attempt: shared by a client's requests, one per client."""

    retry: RetryPolicy
    breaker: CircuitBreaker
    metrics: ClientMetrics
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    errors: TransportErrors = HTTPX_ERRORS
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[None]] = field(default_factory=lambda: _asleep)
    _limit: threading.BoundedSemaphore = field(init=False)
    _async_limit: asyncio.Semaphore | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._limit = threading.BoundedSemaphore(self.max_in_flight)

    def _async_semaphore(self) -> asyncio.Semaphore:
        import asyncio  # only async clients pay for it (~15 ms of a sync app's cold start)

        if self._async_limit is None:
            self._async_limit = asyncio.Semaphore(self.max_in_flight)
        return self._async_limit

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
            if not self.retry.retry_status(request.method, status, attempt):
                return None
            delay = self.retry.delay(
                attempt, retry_after_seconds(response.headers.get("retry-after"))
            )
            reason = str(status)
        if delay is not None:
            self.metrics.retry(reason, delay)
        return delay

    def _attempts(self, request: Any) -> Generator[float | None, Outcome, Any]:
        """The retry loop without I/O (the auth-flow pattern): the driver sends each
        attempt's ``(response, error)``; the loop answers with the delay before the next
        attempt, or ends with the response, or raises the error. One loop for sync and
        async; the drivers only send, close and sleep."""
        attempt = 0
        while True:
            self.breaker.before_request()
            started = time.perf_counter()
            response, error = yield None
            delay = self._judge(request, attempt, response, error, started)
            if delay is None:
                if error is not None:
                    raise error
                return response
            yield delay
            attempt += 1

    def run(self, request: Any, send_once: Callable[[], R]) -> R:
        with self._limit:
            attempts = self._attempts(request)
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
                self.sleep(delay or 0.0)
                next(attempts)

    async def run_async(
        self, request: httpx.Request, send_once: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        async with self._async_semaphore():
            attempts = self._attempts(request)
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
                await self.async_sleep(delay or 0.0)
                next(attempts)


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
