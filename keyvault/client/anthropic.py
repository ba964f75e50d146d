"""``anthropic.Anthropic`` on the keyvault auth flow (the ``anthropic`` extra).

The SDK's 2.x line runs on ``httpx2`` and takes an ``httpx2.Client``; the same I/O-free
key flow drives an ``httpx2.Auth`` adapter here. The SDK writes ``Authorization: Bearer
<api_key>`` from its ``api_key`` on every request; it is given a placeholder that the auth
flow always overwrites with the current primary, so ``messages.create`` always sends the
current key and a 401 after a rotation is retried with the refreshed key.

Retries: the SDK retries by itself (429, 5xx, connection errors, honouring
``retry-after``), so this client adds no retry layer of its own — only the circuit breaker
and the concurrency limit, which see each of the SDK's attempts. One retry policy, no
multiplying.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2

from keyvault.client import ClientSettings, refresh_logger, resilience_for
from keyvault.client.auth import (
    HeaderStyle,
    KeySource,
    async_key_flow,
    drive_sync,
    key_flow,
)
from keyvault.client.cache import KeyCache
from keyvault.client.http import Resilience
from keyvault.client.limiter import KeyLimiter
from keyvault.client.loops import LoopSafeTransports
from keyvault.client.resilience import NO_RETRIES, TransportErrors

if TYPE_CHECKING:
    from keyvault.client.responses import ResponseCache

#: what the SDK is told its key is; the auth flow replaces it on every request
PLACEHOLDER_KEY = "keyvault-managed-key-never-sent"
HTTPX2_ERRORS = TransportErrors(
    (httpx2.TransportError,), (httpx2.ConnectError, httpx2.ConnectTimeout)
)


class KeyAuth2(httpx2.Auth):
    """The key flow as an ``httpx2.Auth``."""

    def __init__(self, keys: KeySource, key_name: str) -> None:
        self.keys = keys
        self.key_name = key_name
        self.style = HeaderStyle("Authorization", "Bearer")

    def sync_auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        yield from drive_sync(key_flow(request, self.style, self.key_name), self.keys)


class AsyncKeyAuth2(KeyAuth2):
    """The async side of :class:`KeyAuth2` (httpx2's async flow)."""

    def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        return async_key_flow(request, self.style, self.key_name, self.keys)


class _GuardedClient(httpx2.Client):
    """An ``httpx2.Client`` whose ``send`` passes the breaker and the concurrency limit."""

    def __init__(self, *, resilience: Resilience, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resilience = resilience

    def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        parent = super().send
        response: httpx2.Response = self.resilience.send(
            request, lambda: parent(request, **kwargs), kwargs.get("stream", False)
        )
        return response


class _AsyncGuardedClient(LoopSafeTransports, httpx2.AsyncClient):
    """The ``httpx2.AsyncClient`` twin of :class:`_GuardedClient`."""

    def __init__(self, *, resilience: Resilience, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resilience = resilience

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        parent = super().send
        response: httpx2.Response = await self.resilience.send_async(
            request, lambda: parent(request, **kwargs), kwargs.get("stream", False)
        )
        return response


def build_anthropic(
    cache: KeyCache,
    limiter: KeyLimiter,
    name: str,
    *,
    asynchronous: bool = False,
    breaker_threshold: int = 5,
    breaker_cooldown: float = 30.0,
    http_options: dict[str, Any] | None = None,
    responses: ResponseCache | None = None,
    **sdk_options: Any,
) -> anthropic.Anthropic | anthropic.AsyncAnthropic:
    """``sdk_options`` go to ``anthropic.Anthropic`` (or ``AsyncAnthropic``: ``base_url``,
    ``max_retries``, ``timeout``...); ``http_options`` to its ``httpx2`` client (``proxy``,
    ``verify``...). The SDK retries (its ``max_retries``); each of its attempts takes a slot
    of the key's ``limiter``, so it shares the key's limit with every other client of it."""
    if "api_key" in sdk_options:
        raise TypeError("the key comes from keyvault; do not pass api_key")
    keys = KeySource(cache, on_refresh=refresh_logger(name))
    keys.cache.get()  # not found or wrong environment: fail here, not on the first call
    settings = ClientSettings(
        retry=NO_RETRIES,
        breaker_threshold=breaker_threshold,
        breaker_cooldown=breaker_cooldown,
    )
    resilience = resilience_for(
        name, settings, limiter, responses, errors=HTTPX2_ERRORS, http=httpx2
    )
    if asynchronous:
        async_client = _AsyncGuardedClient(
            resilience=resilience, auth=AsyncKeyAuth2(keys, name), **(http_options or {})
        )
        return anthropic.AsyncAnthropic(
            api_key=PLACEHOLDER_KEY, http_client=async_client, **sdk_options
        )
    http_client = _GuardedClient(
        resilience=resilience, auth=KeyAuth2(keys, name), **(http_options or {})
    )
    return anthropic.Anthropic(api_key=PLACEHOLDER_KEY, http_client=http_client, **sdk_options)
