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
        #: labelled children by (metric, labels): ``labels()`` costs microseconds a call,
        #: and the hot path would pay it three times a request
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
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
            "how long requests that waited for a slot of their key (or out a 429 pause) waited",
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

    def _child(self, metric: Any, *labels: str) -> Any:
        slot = (id(metric), labels)
        child = self._children.get(slot)
        if child is None:
            child = self._children[slot] = metric.labels(self.key, *labels)
        return child

    def request(self, fingerprint: str, status: int | str, seconds: float) -> None:
        if self._requests is not None:
            self._child(self._requests, fingerprint, str(status)).inc()
            self._child(self._latency).observe(seconds)

    def cache(self, result: str) -> None:
        if self._cache is not None:
            self._child(self._cache, result).inc()

    def merged(self) -> None:
        if self._merged is not None:
            self._child(self._merged).inc()

    def queue_wait(self, seconds: float) -> None:
        if self._queue_wait is not None:
            self._child(self._queue_wait).observe(seconds)

    def queue_depth(self, depth: int) -> None:
        if self._queue_depth is not None:
            self._child(self._queue_depth).set(depth)

    def paused(self, seconds: float) -> None:
        log.warning(
            "key %s: upstream asked to wait %.1fs; pausing the key's sends", self.key, seconds
        )
        if self._pauses is not None:
            self._child(self._pauses).inc()
            self._child(self._paused_seconds).inc(seconds)

    def retry(self, reason: str, delay: float) -> None:
        log.warning("key %s: retrying after %s in %.2fs", self.key, reason, delay)
        if self._retries is not None:
            self._child(self._retries, reason).inc()

    def breaker(self, state: BreakerState) -> None:
        log.warning("key %s: circuit breaker %s", self.key, state)
        if self._breaker is not None:
            self._child(self._breaker).set(0 if state == BreakerState.CLOSED else 1)

    def refresh(self, fingerprint: str) -> None:
        log.info("key %s: keyset refreshed, primary %s", self.key, fingerprint)
        if self._refreshes is not None:
            self._child(self._refreshes, fingerprint).inc()
