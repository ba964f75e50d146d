"""The auth flow: put the current primary on every request; on 401/403 refetch the keyset
past the cache and try the new primary once, then the secondary once. Never more.

The flow itself does no I/O (the httpx ``Auth`` pattern): it yields either a request to
send or a :class:`NeedKeys` asking its driver for a keyset. Drivers fulfil ``NeedKeys``
synchronously or, in async code, in a worker thread, so one flow serves ``httpx`` sync and
async clients and the ``httpx2`` clients the Anthropic SDK runs on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Protocol

import httpx
import msgspec

from keyvault.client.cache import KeyCache
from keyvault.errors import InvalidKeyValue
from keyvault.model import KeySet, KeyVersion

log = logging.getLogger("keyvault.client")

REJECTED = frozenset({401, 403})
#: printable ASCII, inner spaces allowed, none at the ends: what any HTTP stack will send
_HEADER_SAFE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
FINGERPRINT_EXTENSION = "keyvault_fingerprint"


class _Request(Protocol):
    headers: Any
    extensions: dict[str, Any]


class _Response(Protocol):
    status_code: int


class NeedKeys(msgspec.Struct, frozen=True):
    """The flow asks its driver for a keyset: cached, or refetched past ``seen``."""

    refresh: bool
    seen: KeySet | None = None


class HeaderStyle(msgspec.Struct, frozen=True):
    """How a key is written into a request: ``Authorization: Bearer <key>`` or a raw header."""

    header: str = "Authorization"
    scheme: str | None = "Bearer"

    @classmethod
    def for_header(cls, header: str) -> HeaderStyle:
        if header.lower() == "authorization":
            return cls("Authorization", "Bearer")
        return cls(header, None)

    def apply(self, request: _Request, key: KeyVersion) -> None:
        raw = key.secret.reveal()
        if not _HEADER_SAFE.fullmatch(raw):
            # checked here, not left to h11: its error quotes the whole header value
            raise InvalidKeyValue(
                f"key version {key.version} ({key.fingerprint}) cannot be sent in the "
                f"{self.header} header: it holds whitespace at an end, a control character "
                "or non-ASCII text; replace it (`keyvault stage`) with a clean value"
            )
        request.headers[self.header] = f"{self.scheme} {raw}" if self.scheme else raw
        request.extensions[FINGERPRINT_EXTENSION] = key.fingerprint
        if self.scheme is None:  # httpx masks Authorization in reprs, not other headers
            request.headers.__class__ = masking(type(request.headers), self.header)


_MASKING: dict[tuple[type, str], type] = {}


def masking(headers_type: type, header: str) -> type:
    """A subclass of an httpx (or httpx2) ``Headers`` type whose repr masks ``header`` as
    httpx masks Authorization, so ``repr(response.request.headers)`` never shows a key sent
    in ``x-api-key``. Built once per type and header; an instance's class is swapped to it."""
    if getattr(headers_type, "_keyvault_masked", None) is not None:
        return headers_type
    made = _MASKING.get((headers_type, header))
    if made is None:
        base: Any = headers_type
        masked = header.lower()

        def __repr__(self: Any) -> str:
            shown = base(self)
            for name in list(shown.keys()):
                if name.lower() == masked:
                    shown[name] = "[secure]"
            return repr(shown)

        namespace = {
            "__repr__": __repr__,
            "_keyvault_masked": masked,
            "__module__": base.__module__,
        }
        made = type(base.__name__, (base,), namespace)
        _MASKING[(headers_type, header)] = made
    return made


Flow = Generator["NeedKeys | Any", Any, None]


def key_flow(request: _Request, style: HeaderStyle, key_name: str = "") -> Flow:
    keyset: KeySet = yield NeedKeys(refresh=False)
    tried = {keyset.primary.fingerprint}
    style.apply(request, keyset.primary)
    response: _Response = yield request
    if response.status_code not in REJECTED:
        return
    fresh: KeySet = yield NeedKeys(refresh=True, seen=keyset)
    if fresh.primary.fingerprint not in tried:
        log.info(
            "key %s: %s with primary %s; retrying with refreshed primary %s",
            key_name,
            response.status_code,
            keyset.primary.fingerprint,
            fresh.primary.fingerprint,
        )
        tried.add(fresh.primary.fingerprint)
        style.apply(request, fresh.primary)
        response = yield request
        if response.status_code not in REJECTED:
            return
    secondary = fresh.secondary
    if secondary is not None and secondary.fingerprint not in tried:
        log.info(
            "key %s: %s with primary; retrying once with secondary %s",
            key_name,
            response.status_code,
            secondary.fingerprint,
        )
        style.apply(request, secondary)
        yield request


class KeySource:
    """Answers the flow's NeedKeys from a cache; async callers fetch in a worker thread."""

    def __init__(self, cache: KeyCache, on_refresh: Callable[[KeySet], None] | None = None):
        self.cache = cache
        self._on_refresh = on_refresh

    def sync(self, need: NeedKeys) -> KeySet:
        if need.refresh:
            keyset = self.cache.refresh(need.seen)
            if self._on_refresh is not None:
                self._on_refresh(keyset)
            return keyset
        return self.cache.get()

    async def asynchronous(self, need: NeedKeys) -> KeySet:
        if not need.refresh:
            keyset = self.cache.peek()  # the hit path never leaves the event loop
            if keyset is not None:
                return keyset
        import asyncio  # not at import: a sync app never pays for it

        return await asyncio.to_thread(self.sync, need)


def drive_sync(flow: Flow, keys: KeySource) -> Generator[Any, Any, None]:
    try:
        item = next(flow)
        while True:
            if isinstance(item, NeedKeys):
                item = flow.send(keys.sync(item))
            else:
                response = yield item
                item = flow.send(response)
    except StopIteration:
        return


async def async_key_flow(
    request: Any, style: HeaderStyle, key_name: str, keys: KeySource
) -> AsyncGenerator[Any, Any]:
    """The key flow as an httpx (or httpx2) ``async_auth_flow`` generator."""
    driver = drive_async(key_flow(request, style, key_name), keys)
    response = None
    try:
        while True:
            request_out = await driver.asend(response)
            response = yield request_out
    except StopAsyncIteration:
        return


async def drive_async(flow: Flow, keys: KeySource) -> AsyncGenerator[Any, Any]:
    try:
        item = next(flow)
        while True:
            if isinstance(item, NeedKeys):
                item = flow.send(await keys.asynchronous(item))
            else:
                response = yield item
                item = flow.send(response)
    except StopIteration:
        return


class KeyAuth(httpx.Auth):
    """``httpx.Auth`` that always sends the current key of one keyvault key."""

    requires_request_body = True  # a retried request must be replayable

    def __init__(self, keys: KeySource, style: HeaderStyle, key_name: str = "") -> None:
        self.keys = keys
        self.style = style
        self.key_name = key_name

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        yield from drive_sync(key_flow(request, self.style, self.key_name), self.keys)

    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return async_key_flow(request, self.style, self.key_name, self.keys)

    def __repr__(self) -> str:
        return f"KeyAuth({self.key_name!r}, header={self.style.header!r})"
