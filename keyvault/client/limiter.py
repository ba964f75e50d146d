"""One limiter per key per process: how many requests are in flight, who waits, and when.

Every client of a key (sync, async on any event loop, the Anthropic SDK's) takes a slot
here before it sends, so ``max_in_flight`` holds for the key, not per client object.
Waiters are served in arrival order from one queue, whichever kind they are: a slot is
handed to the first waiter directly (no thundering herd, no barging). The state is guarded
by a thread lock and never by an asyncio primitive, which binds to one event loop; an async
waiter is woken through its own loop with ``call_soon_threadsafe``.

A 429 or 529 carrying ``Retry-After`` pauses the key (:meth:`KeyLimiter.pause`): a request
that gets a slot during the pause waits it out before sending, so one throttled answer
slows every sender of the key instead of each finding out by itself.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from keyvault.errors import QueueFullError, QueueTimeoutError

if TYPE_CHECKING:
    import asyncio

DEFAULT_MAX_IN_FLIGHT = 5
DEFAULT_MAX_QUEUE = 100
DEFAULT_QUEUE_TIMEOUT = 60.0


class LimitSettings(msgspec.Struct, frozen=True):
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_queue: int = DEFAULT_MAX_QUEUE
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT


class _Waiter:
    """One queued caller: a thread's event, or a future on the caller's loop."""

    __slots__ = ("event", "future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, future: Any = None) -> None:
        self.granted = False
        self.event = threading.Event() if loop is None else None
        self.loop = loop
        self.future = future

    def wake(self) -> bool:
        """Hand this waiter the slot; False when its event loop is closed (nobody is left
        to use the slot, so it must go to the next waiter instead)."""
        if self.event is not None:
            self.granted = True
            self.event.set()
            return True
        assert self.loop is not None
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # "Event loop is closed"
            return False
        self.granted = True
        return True


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


class KeyLimiter:
    """At most ``max_in_flight`` requests of one key at once; ``max_queue`` callers wait in
    arrival order, each for at most ``queue_timeout`` seconds."""

    def __init__(
        self,
        name: str,
        settings: LimitSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or LimitSettings()
        self._clock = clock
        self._on_depth = on_depth
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiters: deque[_Waiter] = deque()
        self._paused_until = 0.0

    # -- state, for metrics and tests ----------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def pause(self, seconds: float) -> None:
        """Hold new sends of this key for ``seconds`` (a 429's Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def pause_left(self) -> float:
        """Seconds a request that holds a slot must still wait before sending."""
        return max(0.0, self._paused_until - self._clock())

    # -- taking and giving back a slot ----------------------------------------------------

    def _try_take(self, waiter_factory: Callable[[], _Waiter]) -> _Waiter | None:
        """Take a slot now (None), or queue a waiter and return it. Under the lock."""
        if self._in_flight < self.settings.max_in_flight and not self._waiters:
            self._in_flight += 1
            return None
        if len(self._waiters) >= self.settings.max_queue:
            raise QueueFullError(
                f"key {self.name!r}: {self._in_flight} requests in flight and "
                f"{len(self._waiters)} waiting (max_in_flight = "
                f"{self.settings.max_in_flight}, max_queue = {self.settings.max_queue})"
            )
        waiter = waiter_factory()
        self._waiters.append(waiter)
        self._depth_changed()
        return waiter

    def _give_up(self, waiter: _Waiter) -> None:
        """A waiter stops waiting (timeout, cancellation). Under the lock. If a slot was
        handed to it meanwhile, the slot passes on."""
        if waiter.granted:
            self._release_locked()
            return
        with contextlib.suppress(ValueError):  # already handed a slot and gone
            self._waiters.remove(waiter)
        self._depth_changed()

    def release(self) -> None:
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()  # the slot moves to it: in_flight unchanged
            self._depth_changed()
            if waiter.wake():
                return
        self._in_flight -= 1

    def _timeout_error(self) -> QueueTimeoutError:
        return QueueTimeoutError(
            f"key {self.name!r}: waited {self.settings.queue_timeout:g}s for one of "
            f"{self.settings.max_in_flight} request slots (queue_timeout)"
        )

    def _depth_changed(self) -> None:
        if self._on_depth is not None:
            self._on_depth(len(self._waiters))

    def acquire(self) -> bool:
        """Take a slot, waiting in line (True if it had to); QueueFullError or
        QueueTimeoutError otherwise."""
        with self._lock:
            waiter = self._try_take(_Waiter)
        if waiter is None:
            return False
        assert waiter.event is not None
        if waiter.event.wait(self.settings.queue_timeout):
            return True
        with self._lock:
            if waiter.granted:  # woken between the timeout and the lock: keep the slot
                return True
            self._give_up(waiter)
        raise self._timeout_error()

    async def acquire_async(self) -> bool:
        """The same line as :meth:`acquire`, awaited on whichever loop the caller runs."""
        import asyncio

        loop = asyncio.get_running_loop()
        with self._lock:
            waiter = self._try_take(lambda: _Waiter(loop, loop.create_future()))
        if waiter is None:
            return False
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), self.settings.queue_timeout)
        except TimeoutError:
            with self._lock:
                if waiter.granted:
                    return True
                self._give_up(waiter)
            raise self._timeout_error() from None
        except BaseException:  # cancelled: give the place (or the slot) back
            with self._lock:
                self._give_up(waiter)
            raise
        return True
