"""Client observability: prometheus_client when installed, standard logging always.

Labels carry key names and fingerprints, never values.
"""

from __future__ import annotations

import logging
from typing import Any

from keyvault.client.resilience import BreakerState

log = logging.getLogger("keyvault.client")

_prom: Any
try:  # optional: the `service` extra installs it
    import prometheus_client as _prom
except ImportError:  # pragma: no cover - exercised only without the extra
    _prom = None

_METRICS: dict[str, Any] = {}


def _metric(kind: str, name: str, doc: str, labels: tuple[str, ...]) -> Any:
    if _prom is None:
        return None
    if name not in _METRICS:
        _METRICS[name] = getattr(_prom, kind)(name, doc, labels)
    return _METRICS[name]


class ClientMetrics:
    """What one key's client reports."""

    def __init__(self, key_name: str) -> None:
        self.key = key_name
        self._requests = _metric(
            "Counter", "keyvault_client_requests", "requests sent", ("key", "fingerprint", "status")
        )
        self._latency = _metric(
            "Histogram",
            "keyvault_client_request_seconds",
            "request latency, from joining the key's queue to the answer",
            ("key",),
        )
        self._retries = _metric(
            "Counter", "keyvault_client_retries", "retries by reason", ("key", "reason")
        )
        self._breaker = _metric(
            "Gauge", "keyvault_client_breaker_open", "1 while the breaker is not closed", ("key",)
        )
        self._queue_wait = _metric(
            "Histogram",
            "keyvault_client_queue_wait_seconds",
            "time a request waited for a slot of its key (and out a 429 pause)",
            ("key",),
        )
        self._queue_depth = _metric(
            "Gauge", "keyvault_client_queue_depth", "requests waiting for a slot", ("key",)
        )
        self._pauses = _metric(
            "Counter",
            "keyvault_client_pauses",
            "429/529 answers with Retry-After that paused the key",
            ("key",),
        )
        self._paused_seconds = _metric(
            "Counter",
            "keyvault_client_paused_seconds",
            "seconds of Retry-After pauses asked for",
            ("key",),
        )
        self._cache = _metric(
            "Counter",
            "keyvault_client_response_cache",
            "response cache lookups by result (hit, miss, error)",
            ("key", "result"),
        )
        self._merged = _metric(
            "Counter",
            "keyvault_client_merged_requests",
            "requests answered by an identical request's upstream call",
            ("key",),
        )
        self._refreshes = _metric(
            "Counter", "keyvault_client_key_refreshes", "keyset refetches", ("key", "fingerprint")
        )

    def request(self, fingerprint: str, status: int | str, seconds: float) -> None:
        if self._requests is not None:
            self._requests.labels(self.key, fingerprint, str(status)).inc()
            self._latency.labels(self.key).observe(seconds)

    def cache(self, result: str) -> None:
        if self._cache is not None:
            self._cache.labels(self.key, result).inc()

    def merged(self) -> None:
        if self._merged is not None:
            self._merged.labels(self.key).inc()

    def queue_wait(self, seconds: float) -> None:
        if self._queue_wait is not None:
            self._queue_wait.labels(self.key).observe(seconds)

    def queue_depth(self, depth: int) -> None:
        if self._queue_depth is not None:
            self._queue_depth.labels(self.key).set(depth)

    def paused(self, seconds: float) -> None:
        log.warning(
            "key %s: upstream asked to wait %.1fs; pausing the key's sends", self.key, seconds
        )
        if self._pauses is not None:
            self._pauses.labels(self.key).inc()
            self._paused_seconds.labels(self.key).inc(seconds)

    def retry(self, reason: str, delay: float) -> None:
        log.warning("key %s: retrying after %s in %.2fs", self.key, reason, delay)
        if self._retries is not None:
            self._retries.labels(self.key, reason).inc()

    def breaker(self, state: BreakerState) -> None:
        log.warning("key %s: circuit breaker %s", self.key, state)
        if self._breaker is not None:
            self._breaker.labels(self.key).set(0 if state == BreakerState.CLOSED else 1)

    def refresh(self, fingerprint: str) -> None:
        log.info("key %s: keyset refreshed, primary %s", self.key, fingerprint)
        if self._refreshes is not None:
            self._refreshes.labels(self.key, fingerprint).inc()
