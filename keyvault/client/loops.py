"""Async clients that work from any event loop.

An httpx (or httpx2) ``AsyncClient`` keeps its connections in a pool bound to the loop that
opened them, so reusing one client in a second ``asyncio.run`` fails ("Event loop is
closed"). :class:`PerLoopTransport` keeps one transport per running loop instead, built the
way the client would have built it; a transport the caller passes (``transport=``) is left
as given: it is theirs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio


def _running_loop() -> asyncio.AbstractEventLoop:
    import asyncio  # here, not at import: a sync app never pays for asyncio

    return asyncio.get_running_loop()


class PerLoopTransport:
    """One underlying async transport per event loop, made on first use in that loop.

    A loop's transport goes when the loop is collected; closing closes the current loop's
    (another loop's sockets cannot be closed from here, and die with that loop)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def _current(self) -> Any:
        loop = _running_loop()
        transport = self._by_loop.get(loop)
        if transport is None:
            transport = self._by_loop[loop] = self._factory()
        return transport

    async def handle_async_request(self, request: Any) -> Any:
        return await self._current().handle_async_request(request)

    async def __aenter__(self) -> PerLoopTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        transport = self._by_loop.pop(_running_loop(), None)
        if transport is not None:
            await transport.aclose()


class LoopSafeTransports:
    """A mixin for ``AsyncClient`` subclasses: their default transports (and the proxy
    transports httpx builds from the environment) become :class:`PerLoopTransport`\\ s."""

    def _init_transport(self, *args: Any, **kwargs: Any) -> Any:
        build = super()._init_transport  # type: ignore[misc]
        if kwargs.get("transport") is not None:
            return build(*args, **kwargs)
        return PerLoopTransport(lambda: build(*args, **kwargs))

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> Any:
        build = super()._init_proxy_transport  # type: ignore[misc]
        return PerLoopTransport(lambda: build(*args, **kwargs))
