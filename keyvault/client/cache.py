"""The in-process key cache: one entry per (provider, key), kept apart from refresh policy.

A hit is one attribute read, one clock call and one comparison, with no lock and no copy:
the entry is an immutable object swapped whole. A cold miss takes the lock, so a hundred
threads missing at once make one backend fetch (single flight). Once an entry exists, an
expired one is refreshed by one caller while every other caller is served the entry at
once: a backend that hangs costs one caller one timeout per retry interval, never a queue
of callers behind the lock. When the backend fails, the last keyset is served for up to
``max_stale`` and a warning is logged once per outage.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import msgspec

from keyvault.errors import EnvironmentMismatch, KeyvaultError
from keyvault.model import KeySet

log = logging.getLogger("keyvault.cache")

DEFAULT_TTL = 300.0
DEFAULT_MAX_STALE = 3600.0
#: while serving stale, how long to wait before asking the backend again
STALE_RETRY_INTERVAL = 5.0


class CacheEntry(msgspec.Struct, frozen=True):
    keyset: KeySet
    fetched_at: float  # monotonic time of the successful fetch
    fresh_until: float  # monotonic time after which a get() asks the backend


class KeyCache:
    def __init__(
        self,
        fetch: Callable[[], KeySet],
        *,
        name: str = "",
        ttl: float = DEFAULT_TTL,
        jitter: float = 0.1,
        max_stale: float = DEFAULT_MAX_STALE,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        on_fetch: Callable[[KeySet], None] | None = None,
    ) -> None:
        if ttl <= 0 or max_stale < 0 or not 0 <= jitter < 1:
            raise ValueError("ttl must be > 0, max_stale >= 0 and 0 <= jitter < 1")
        self.name = name
        self.ttl = ttl
        self.jitter = jitter
        self.max_stale = max_stale
        self._fetch = fetch
        self._clock = clock
        self._rng = rng
        self._on_fetch = on_fetch
        self._lock = threading.Lock()
        self._entry: CacheEntry | None = None
        self._warned_stale = False
        self.fetches = 0  # backend fetches made: for tests and metrics

    def get(self) -> KeySet:
        """The cached keyset, fetching it when missing or older than its (jittered) TTL."""
        entry = self._entry
        if entry is None:
            return self._load(stale=None)
        now = self._clock()
        if now < entry.fresh_until:
            return entry.keyset
        if now - entry.fetched_at <= self.max_stale:
            # usable: one caller refreshes; the others do not wait behind it
            if not self._lock.acquire(blocking=False):
                return entry.keyset
            try:
                return self._load_locked(stale=None, force=False)
            finally:
                self._lock.release()
        return self._load(stale=None)

    def peek(self) -> KeySet | None:
        """The keyset if fresh, without ever fetching (for async callers' fast path)."""
        entry = self._entry
        if entry is not None and self._clock() < entry.fresh_until:
            return entry.keyset
        return None

    def refresh(self, seen: KeySet | None = None) -> KeySet:
        """Fetch past the TTL, unless another caller already replaced ``seen``."""
        return self._load(stale=seen, force=True)

    def invalidate(self) -> None:
        self._entry = None

    def _load(self, *, stale: KeySet | None, force: bool = False) -> KeySet:
        with self._lock:
            return self._load_locked(stale=stale, force=force)

    def _load_locked(self, *, stale: KeySet | None, force: bool) -> KeySet:
        entry = self._entry
        now = self._clock()
        if entry is not None:
            if force and stale is not None and entry.keyset is not stale:
                return entry.keyset  # someone refreshed while we waited for the lock
            if not force and now < entry.fresh_until:
                return entry.keyset  # someone filled it while we waited
        try:
            keyset = self._fetch()
        except EnvironmentMismatch:
            raise  # the guard is never bypassed by a cached value
        except KeyvaultError as exc:
            # down, hung past its timeout, denied, or an entry another tool broke: the last
            # good keyset is still the best answer, for up to max_stale
            return self._serve_stale(entry, self._clock(), exc)
        now = self._clock()
        self.fetches += 1
        lifetime = self.ttl * (1 - self.jitter * self._rng())
        self._entry = CacheEntry(keyset, now, now + lifetime)
        if self._warned_stale:
            log.info("key %s: backend reachable again, cache refreshed", self.name)
            self._warned_stale = False
        if self._on_fetch is not None:
            self._on_fetch(keyset)
        return keyset

    def _serve_stale(self, entry: CacheEntry | None, now: float, exc: KeyvaultError) -> KeySet:
        """``now`` is read after the failed fetch: a fetch that hung for its whole timeout
        must not leave an entry that is already due again."""
        if entry is None or now - entry.fetched_at > self.max_stale:
            raise exc
        if not self._warned_stale:
            log.warning(
                "key %s: backend unavailable (%s); serving the cached keyset (primary %s) "
                "for up to %.0fs",
                self.name,
                exc,
                entry.keyset.primary.fingerprint,
                self.max_stale - (now - entry.fetched_at),
            )
            self._warned_stale = True
        self._entry = CacheEntry(entry.keyset, entry.fetched_at, now + STALE_RETRY_INTERVAL)
        return entry.keyset
