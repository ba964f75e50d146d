"""The thin client: ``httpx.Client``/``AsyncClient`` subclasses whose ``send`` wraps every
request in a concurrency limit, a circuit breaker and the retry policy, with the key auth
flow inside each attempt (so a retry always carries the freshest key).

Wrapping ``send`` rather than the transport keeps every httpx option working unchanged,
proxies from the environment, mounts and custom transports included.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx

from keyvault.client.auth import FINGERPRINT_EXTENSION
from keyvault.client.limiter import KeyLimiter
from keyvault.client.loops import LoopSafeTransports
from keyvault.client.metrics import ClientMetrics
from keyvault.client.resilience import (
    FAILURE_STATUSES,
    HTTPX_ERRORS,
    CircuitBreaker,
    RetryPolicy,
    TransportErrors,
    retry_after_seconds,
)

if TYPE_CHECKING:  # the cache's module loads with the first configured cache, not before
    from keyvault.client.responses import ResponseCache, StoredResponse


class _Response(Protocol):
    status_code: int

    def close(self) -> None: ...


R = TypeVar("R", bound=_Response)
R2 = TypeVar("R2")


class Step(enum.Enum):
    """What the response cache's I/O-free flow asks its driver to do."""

    SEND = "send"  # through the limit, the breaker and the retries
    GET = "get"  # ask the store
    PUT = "put"  # fill the store
    WAIT = "wait"  # for an identical request's flight
    READ = "read"  # a response's whole body


#: builds the client's own response type from a stored answer, marked hit|miss|merged
Rebuild = Callable[["StoredResponse", Any, str], Any]
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
    #: the HTTP library whose responses this client returns (httpx, or the SDK's httpx2)
    http: Any = httpx
    #: the response cache and request merging (None: off, the default)
    responses: ResponseCache | None = None
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
            if status < 400:  # the common answer: no header to read, nothing to decide
                return None
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

    # the response cache and merging, around the limited, retried send ------------------------

    def _through_cache(self, request: Any, streamed: bool) -> Generator[tuple[Step, Any], Any, Any]:
        """The cache and merging without I/O, as :meth:`_attempts` is the retry loop: it
        yields what to do (send through the limit and retries, ask or fill the store, wait
        for a flight, read a body) and the sync and async drivers do it. A hit and a merged
        request take no slot and make no upstream call."""
        from keyvault.client.responses import StoredResponse, StoreError, storable

        cache = self.responses
        key = cache.key_for(request, self.metrics.key) if cache is not None else None
        if cache is None or key is None:
            return (yield Step.SEND, None)
        rebuild = rebuilder(streamed, self.http)
        try:
            stored = yield Step.GET, key
        except StoreError:
            self.metrics.cache("error")
            stored = None
        if stored is not None:
            self.metrics.cache("hit")
            return rebuild(stored, request, "hit")
        while True:
            flight, leader = cache.flights.join(key)
            if leader:
                break
            shared = yield Step.WAIT, flight
            if shared is not None:
                self.metrics.merged()
                return rebuild(shared, request, "merged")
            # the leader had nothing to share (a stream, or it was cancelled): lead anew
        try:
            # asked again as the leader: an identical flight may have stored its answer and
            # ended between the first lookup and the join
            stored = yield Step.GET, key
        except StoreError:
            stored = None
        if stored is not None:
            cache.flights.land(key, flight, stored)
            self.metrics.cache("hit")
            return rebuild(stored, request, "hit")
        try:
            response = yield Step.SEND, None
            if not _shareable(response):
                cache.flights.land(key, flight, None)
                return response
            body = yield Step.READ, response
        except Exception as exc:  # followers share the failure, as they share answers
            cache.flights.land(key, flight, None, exc)
            raise
        except BaseException:  # the leader was cancelled: followers send their own
            cache.flights.land(key, flight, None)
            raise
        stored = StoredResponse.capture(response.status_code, response.headers.multi_items(), body)
        if storable(response.status_code, response.headers.get("content-type", ""), len(body)):
            try:
                yield Step.PUT, (key, stored)
            except StoreError:
                self.metrics.cache("error")
        cache.flights.land(key, flight, stored)
        self.metrics.cache("miss")
        return rebuild(stored, request, "miss")

    def send(self, request: Any, send_once: Callable[[], Any], streamed: bool = False) -> Any:
        """:meth:`run` behind the response cache (when one is configured)."""
        if self.responses is None:  # the common case: no flow to drive
            return self.run(request, send_once)
        steps = self._through_cache(request, streamed)
        reply: Any = None
        error: BaseException | None = None
        while True:
            finished, step = _advance(steps, reply, error)
            if finished:
                return step
            (kind, arg), reply, error = step, None, None
            try:
                if kind is Step.SEND:
                    reply = self.run(request, send_once)
                elif kind is Step.READ:
                    try:
                        reply = arg.read()
                    finally:
                        arg.close()
                elif kind is Step.WAIT:
                    reply = arg.wait()
                else:
                    reply = self._store_call(kind, arg)
            except BaseException as exc:
                error = exc

    async def send_async(
        self, request: Any, send_once: Callable[[], Awaitable[Any]], streamed: bool = False
    ) -> Any:
        if self.responses is None:
            return await self.run_async(request, send_once)
        steps = self._through_cache(request, streamed)
        reply: Any = None
        error: BaseException | None = None
        while True:
            finished, step = _advance(steps, reply, error)
            if finished:
                return step
            (kind, arg), reply, error = step, None, None
            try:
                if kind is Step.SEND:
                    reply = await self.run_async(request, send_once)
                elif kind is Step.READ:
                    try:
                        reply = await arg.aread()
                    finally:
                        await arg.aclose()
                elif kind is Step.WAIT:
                    assert self.responses is not None
                    reply = await arg.wait_async(self.responses.flights.lock)
                elif self.responses is not None and self.responses.store.blocking:
                    import asyncio  # Redis: off the event loop

                    reply = await asyncio.to_thread(self._store_call, kind, arg)
                else:
                    reply = self._store_call(kind, arg)
            except BaseException as exc:
                error = exc

    def _store_call(self, kind: Step, arg: Any) -> Any:
        assert self.responses is not None
        store = self.responses.store
        return store.get(arg) if kind is Step.GET else store.put(*arg)

    def run(self, request: Any, send_once: Callable[[], R]) -> R:
        queued_at = time.perf_counter()
        waited = self.limiter.acquire()
        try:
            paused = self.limiter.pause_left()
            if paused:
                self.sleep(paused)
            if waited or paused:  # the uncontended path skips a histogram observation
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
        waited = await self.limiter.acquire_async()
        try:
            paused = self.limiter.pause_left()
            if paused:
                await self.async_sleep(paused)
            if waited or paused:
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


def _advance(
    steps: Generator[tuple[Step, Any], Any, Any], reply: Any, error: BaseException | None
) -> tuple[bool, Any]:
    """One turn of an I/O-free flow: (True, its result) when it ended, else (False, the
    next step); the last step's reply or error goes in."""
    try:
        return False, steps.throw(error) if error is not None else steps.send(reply)
    except StopIteration as done:
        return True, done.value


def _shareable(response: Any) -> bool:
    """An answer that can be read whole and handed to others: not an event stream."""
    return "text/event-stream" not in response.headers.get("content-type", "").lower()


def rebuilder(streamed: bool, http: Any = httpx) -> Rebuild:
    """How a client turns a stored answer into a response of its ``http`` module (httpx,
    or the Anthropic SDK's httpx2): read, as ``send`` returns it, or unread for a
    ``stream=True`` send, whose caller iterates it (the proxy's ``aiter_raw``)."""

    def rebuild(stored: StoredResponse, request: Any, how: str) -> Any:
        from keyvault.client.responses import CACHE_HEADER

        headers = [*stored.headers, (CACHE_HEADER, how)]
        if not streamed:
            return http.Response(
                stored.status, headers=headers, content=stored.body, request=request
            )
        headers.append(("content-length", str(len(stored.body))))
        stream = http.ByteStream(stored.body)
        return http.Response(stored.status, headers=headers, stream=stream, request=request)

    return rebuild


class KeyvaultClient(httpx.Client):
    """An ``httpx.Client`` that sends one keyvault key and survives rotations and outages."""

    def __init__(self, *, resilience: Resilience, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
        super().__init__(**kwargs)
        self.resilience = resilience

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        parent = super().send
        response: httpx.Response = self.resilience.send(
            request, lambda: parent(request, **kwargs), kwargs.get("stream", False)
        )
        return response


class AsyncKeyvaultClient(LoopSafeTransports, httpx.AsyncClient):
    """The async twin of :class:`KeyvaultClient`."""

    def __init__(self, *, resilience: Resilience, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
        super().__init__(**kwargs)
        self.resilience = resilience

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        parent = super().send
        response: httpx.Response = await self.resilience.send_async(
            request, lambda: parent(request, **kwargs), kwargs.get("stream", False)
        )
        return response
