"""The response cache and request merging: what a request may reuse, and where it is kept.

Opt-in per path prefix (``[client.response_cache] paths``). An entry's key is a SHA-256
over the method, the URL's scheme, host, path and query, the body as canonical JSON (sorted
keys, no whitespace), the keyvault key's *name* (never its value) and the request's values
of the headers that change the answer (``vary``: ``anthropic-version``, ``anthropic-beta``,
``accept``): two apps on different keys never share an entry, nor one key against two
hosts, nor a request with a beta flag and one without. Only 2xx answers to
requests that are not streamed are kept; ``"stream": true`` bodies, ``text/event-stream``
answers and requests saying ``Cache-Control: no-store`` pass straight through.

Identical requests in flight at once on a cached path make one upstream call (a
*flight*): the first is sent, the others wait for its answer and get a copy of it, error
answers included. A follower waits on a thread event or on a future of its own event loop,
so merging works across threads and loops as the limiter does.

This module is I/O-free but for the stores: :class:`MemoryStore` (a bounded LRU with a TTL)
and :class:`RedisStore` (entries sealed with AES-GCM under a key derived from a keyvault key,
so Redis never holds a plaintext answer; expiry by Redis's own TTL; Redis down means every
request goes upstream, with one warning, and nothing fails).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from keyvault.crypto import Keyring, MasterKey, Sealed
from keyvault.errors import BackendUnavailableError, IntegrityError, KeyvaultError

if TYPE_CHECKING:
    import asyncio

    from keyvault.model import KeySet

log = logging.getLogger("keyvault.client")

CACHE_HEADER = "x-keyvault-cache"


class StoreError(BackendUnavailableError):
    """The store could not answer (Redis down or hung) or held an entry that does not open.
    Never reaches the caller: the request goes upstream and the key's error count grows."""


#: headers never replayed from a stored answer: hop-by-hop ones, the framing of the original
#: body (the stored body is decoded), and cookies (a session is not anyone else's)
_DROPPED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-encoding",
        "content-length",
        "set-cookie",
        CACHE_HEADER,
    }
)
CACHEABLE_METHODS = frozenset({"GET", "POST"})


@dataclass(frozen=True)
class StoredResponse:
    """An answer as kept: status, headers (less the dropped ones), decoded body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def capture(
        cls, status: int, headers: Sequence[tuple[str, str]], body: bytes
    ) -> StoredResponse:
        kept = tuple((k, v) for k, v in headers if k.lower() not in _DROPPED)
        return cls(status, kept, body)

    def encode(self) -> bytes:
        return msgspec.msgpack.encode((self.status, self.headers, self.body))

    @classmethod
    def decode(cls, data: bytes) -> StoredResponse:
        status, headers, body = msgspec.msgpack.decode(data)
        return cls(int(status), tuple((str(k), str(v)) for k, v in headers), bytes(body))


# -- which requests, under which key -------------------------------------------------------


def canonical_body(body: bytes) -> tuple[bytes, bool]:
    """The body as canonical JSON (or as sent, when it is not JSON), and whether it asks
    for a streamed answer."""
    if not body:
        return b"", False
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return b"raw:" + body, False
    streamed = isinstance(parsed, dict) and parsed.get("stream") is True
    text = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b"json:" + text.encode(), streamed


#: request headers that change the answer, so they are part of an entry's key: the Claude
#: API's version and beta flags, and what the caller accepts
DEFAULT_VARY = ("accept", "anthropic-version", "anthropic-beta")


def cache_key(
    method: str,
    scheme: str,
    host: str,
    path_and_query: str,
    body: bytes,
    key_name: str,
    varying: Sequence[tuple[str, str]] = (),
) -> str | None:
    """The entry's key, or None when the request must not be cached (a streamed one).
    ``varying`` holds the request's values of the headers that change the answer."""
    canonical, streamed = canonical_body(body)
    if streamed:
        return None
    digest = hashlib.sha256()
    for part in (method.upper(), scheme, host, path_and_query, key_name):
        digest.update(part.encode() + b"\x00")
    for name, value in sorted((name.lower(), value) for name, value in varying):
        digest.update(f"{name}:{value}".encode() + b"\x00")
    digest.update(canonical)
    return digest.hexdigest()


def request_key(
    request: Any, key_name: str, paths: Sequence[str], vary: Sequence[str] = DEFAULT_VARY
) -> str | None:
    """The cache key of an httpx (or httpx2) request on a cached path, else None."""
    if request.method not in CACHEABLE_METHODS:
        return None
    url = request.url
    if not any(url.path.startswith(prefix) for prefix in paths):
        return None
    if "no-store" in request.headers.get("cache-control", "").lower():
        return None
    try:
        body = request.content
    except Exception:  # a streaming body not read yet: never buffered here just to cache
        return None
    raw_path = url.raw_path.decode("ascii", "replace")
    varying = [(name, value) for name in vary for value in request.headers.get_list(name)]
    return cache_key(
        request.method, url.scheme, url.netloc.decode("ascii"), raw_path, body, key_name, varying
    )


#: larger answers are shared with merged requests but not kept: max_entries bounds the
#: memory store's count, this its size (10,000 entries of at most 1 MiB)
MAX_STORED_BODY = 1024 * 1024


def storable(status: int, content_type: str, size: int) -> bool:
    return (
        200 <= status < 300
        and "text/event-stream" not in content_type.lower()
        and size <= MAX_STORED_BODY
    )


# -- stores ---------------------------------------------------------------------------------


class Store(Protocol):
    """Where answers are kept. ``get`` and ``put`` raise :class:`StoreError` when the store
    cannot serve (a miss and a lost fill to the caller, an error in the metrics)."""

    #: whether a call may block on the network (async callers then run it on a thread)
    blocking: bool

    def get(self, key: str) -> StoredResponse | None: ...

    def put(self, key: str, value: StoredResponse) -> None: ...


class MemoryStore:
    """A bounded LRU whose entries expire ``ttl`` seconds after they were stored."""

    blocking = False

    def __init__(
        self, ttl: float, max_entries: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, StoredResponse]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> StoredResponse | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: StoredResponse) -> None:
        with self._lock:
            self._entries[key] = (self._clock() + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


SEAL_INFO = b"keyvault response cache v1"


def seal_keyring(keyset: KeySet) -> Keyring:
    """AES-GCM keys derived from the seal key's primary (which seals) and secondary (which
    still opens what was sealed before a rotation)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    def derive(secret: bytes) -> MasterKey:
        material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SEAL_INFO)
        return MasterKey(material.derive(secret))

    versions = [keyset.primary, *([keyset.secondary] if keyset.secondary else [])]
    return Keyring(derive(version.secret.reveal().encode()) for version in versions)


class RedisStore:
    """Entries in Redis, sealed; expiry by Redis's TTL. After a Redis error it is not asked
    again for ``retry_after`` seconds, so a dead Redis costs one timeout per interval, and
    the first error of an outage is logged once."""

    PREFIX = "keyvault:response:"
    blocking = True

    def __init__(
        self,
        client: Any,
        ttl: float,
        seal_keys: Callable[[], KeySet],
        *,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl = ttl
        self._seal_keys = seal_keys
        #: the keyring derived from the seal key's cached keyset, until that keyset changes
        self._derived: tuple[KeySet, Keyring] | None = None
        self._retry_after = retry_after
        self._clock = clock
        self._down_until = 0.0
        self._warned = False
        self._errors: tuple[type[Exception], ...] = _redis_errors()

    def _usable(self) -> bool:
        return self._clock() >= self._down_until

    def _failed(self, exc: Exception) -> StoreError:
        self._down_until = self._clock() + self._retry_after
        if not self._warned:
            self._warned = True
            log.warning(
                "response cache: Redis is unreachable (%s); requests go upstream until it "
                "answers again",
                type(exc).__name__,
            )
        return StoreError(f"Redis: {type(exc).__name__}")

    def _recovered(self) -> None:
        if self._warned:
            self._warned = False
            log.warning("response cache: Redis answers again")

    def get(self, key: str) -> StoredResponse | None:
        if not self._usable():
            return None
        try:
            raw = self.client.get(self.PREFIX + key)
        except self._errors as exc:
            raise self._failed(exc) from None
        self._recovered()
        if raw is None:
            return None
        try:
            return StoredResponse.decode(self._open(raw, key))
        except (IntegrityError, msgspec.DecodeError, ValueError, TypeError):
            # sealed under a key we no longer hold, edited, or moved from another slot
            raise StoreError("an entry that does not open") from None

    def put(self, key: str, value: StoredResponse) -> None:
        if not self._usable():
            return
        sealed = self._ring().seal(value.encode(), key.encode())
        blob = msgspec.msgpack.encode((sealed.key_id, sealed.nonce, sealed.ciphertext))
        try:
            self.client.set(self.PREFIX + key, blob, px=max(1, int(self.ttl * 1000)))
        except self._errors as exc:
            raise self._failed(exc) from None

    def _ring(self) -> Keyring:
        """The seal keys; a seal key that cannot be read is the cache's problem, never the
        request's (it goes upstream)."""
        try:
            keyset = self._seal_keys()
        except KeyvaultError as exc:
            raise StoreError(f"the seal key cannot be read ({type(exc).__name__})") from None
        derived = self._derived
        if derived is None or derived[0] is not keyset:  # derived once per keyset, not per call
            derived = self._derived = (keyset, seal_keyring(keyset))
        return derived[1]

    def _open(self, raw: bytes, key: str) -> bytes:
        key_id, nonce, ciphertext = msgspec.msgpack.decode(raw)
        return self._ring().open(Sealed(str(key_id), bytes(nonce), bytes(ciphertext)), key.encode())


def _redis_errors() -> tuple[type[Exception], ...]:
    import redis

    return (redis.RedisError, OSError)


# -- merging --------------------------------------------------------------------------------


class Flight:
    """One upstream call that identical requests share."""

    __slots__ = ("_done", "_loops", "error", "result")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._loops: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.result: StoredResponse | None = None
        self.error: BaseException | None = None

    def finish(self, result: StoredResponse | None, error: BaseException | None = None) -> None:
        """``result`` None and no error: the answer could not be shared (a stream);
        followers send their own request."""
        self.result, self.error = result, error
        self._done.set()
        for loop, future in self._loops:
            with contextlib.suppress(RuntimeError):  # that caller's loop is gone
                loop.call_soon_threadsafe(_resolve, future)

    def wait(self) -> StoredResponse | None:
        self._done.wait()
        return self._outcome()

    async def wait_async(self, lock: threading.Lock) -> StoredResponse | None:
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with lock:
            if not self._done.is_set():
                self._loops.append((loop, future))
            else:
                future.set_result(None)
        await future
        return self._outcome()

    def _outcome(self) -> StoredResponse | None:
        if self.error is not None:
            raise self.error
        return self.result


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


class Flights:
    """The flights in progress, by cache key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._flights: dict[str, Flight] = {}

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (sends the request)."""
        with self.lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight()
            return flight, True

    def land(
        self,
        key: str,
        flight: Flight,
        result: StoredResponse | None,
        error: BaseException | None = None,
    ) -> None:
        with self.lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.finish(result, error)


@dataclass
class ResponseCache:
    """A store, the cached paths, and the flights: one per KeyVault, shared by its keys."""

    store: Store
    paths: tuple[str, ...]
    flights: Flights
    vary: tuple[str, ...] = DEFAULT_VARY

    def key_for(self, request: Any, key_name: str) -> str | None:
        return request_key(request, key_name, self.paths, self.vary)
