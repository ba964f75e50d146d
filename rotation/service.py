"""``keyvault serve``: APScheduler runs one sweep job, plus /healthz and Prometheus /metrics.

The scheduler is a thin shell: its one job calls :func:`rotation.sweep.sweep`, which keeps
going when a key fails. The job runs at start and then every interval, coalesced, never two
at once in one process; other replicas are kept honest by the backends' compare-and-set,
not by any lock here. SIGTERM sets a stop flag the sweep checks between keys, so the step in
hand finishes and nothing is left half-done.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from keyvault.errors import ConfigError
from keyvault.model import utcnow
from keyvault.registry import KeyVault
from rotation import logs
from rotation.config import rotation_config
from rotation.engine import Result, Rotator
from rotation.notify import Notifier
from rotation.sweep import SweepReport, sweep

log = logging.getLogger("keyvault.service")
PROGRESS_EVERY = 10.0  # seconds between a long sweep's progress lines


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.key_age = Gauge(
            "keyvault_key_age_seconds",
            "age of each key's primary",
            ("key", "provider", "status"),
            registry=self.registry,
        )
        self.key_max_age = Gauge(
            "keyvault_key_max_age_seconds",
            "each key's policy max age",
            ("key", "provider"),
            registry=self.registry,
        )
        self.rotations = Counter(
            "keyvault_rotations", "rotation attempts by result", ("result",), registry=self.registry
        )
        self.sweep_seconds = Gauge(
            "keyvault_sweep_duration_seconds", "duration of the last sweep", registry=self.registry
        )
        self.last_success = Gauge(
            "keyvault_last_successful_sweep_timestamp_seconds",
            "unix time of the last sweep that completed",
            registry=self.registry,
        )
        self.sweeps_failed = Counter(
            "keyvault_sweeps_failed",
            "sweeps that crashed or could not read a provider",
            registry=self.registry,
        )
        self.webhooks = Counter(
            "keyvault_webhook_deliveries",
            "webhook deliveries by outcome (delivered, refused, failed)",
            ("outcome",),
            registry=self.registry,
        )
        self.clock_skew = Gauge(
            "keyvault_clock_skew_seconds",
            "how far this machine's clock runs ahead of the backend's (negative: behind)",
            ("provider",),
            registry=self.registry,
        )
        self.provider_up = Gauge(
            "keyvault_provider_up",
            "1 if the last sweep could read the provider, else 0",
            ("provider",),
            registry=self.registry,
        )

    def record(self, report: SweepReport, seconds: float, providers: list[str]) -> None:
        down = {row.provider for row in report.unreadable}
        for provider in providers:
            self.provider_up.labels(provider).set(0 if provider in down else 1)
        self.key_age.clear()
        self.key_max_age.clear()
        for row in report.rows:
            if row.age is not None:
                self.key_age.labels(row.name, row.provider, str(row.status)).set(
                    row.age.total_seconds()
                )
            if row.max_age is not None:
                self.key_max_age.labels(row.name, row.provider).set(row.max_age.total_seconds())
        for outcome in report.outcomes:
            self.rotations.labels(str(outcome.result)).inc()
        self.sweep_seconds.set(seconds)
        if down:
            self.sweeps_failed.inc()
        else:
            self.last_success.set(time.time())


class Service:
    def __init__(
        self,
        kv: KeyVault,
        *,
        host: str = "127.0.0.1",
        port: int = 9464,
        interval: timedelta = timedelta(hours=1),
        rotator: Rotator | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kv = kv
        self.host = host
        self.port = port
        self.interval = interval
        self.rotator = rotator or Rotator(kv)
        self.clock = clock
        self.notifier = notifier or _notifier(kv, clock)
        self.metrics = ServiceMetrics()
        self.notifier.on_delivery = lambda outcome: self.metrics.webhooks.labels(outcome).inc()
        self.stop_event = threading.Event()
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.last_sweep_ok: bool | None = None
        #: why the last sweep failed, for /healthz (names and error text, never a value)
        self.last_sweep_problem: str | None = None
        self.last_sweep_at: datetime | None = None
        self.sweeps = 0
        self._http: ThreadingHTTPServer | None = None
        self._monotonic = monotonic
        self._progress: tuple[float, float] | None = None  # (sweep started, last logged)

    # -- the job ---------------------------------------------------------------------------

    def sweep_once(self) -> None:
        started = time.perf_counter()
        try:
            report = sweep(
                self.kv,
                self.rotator,
                stop=self.stop_event,
                concurrency=rotation_config(self.kv).service.sweep_concurrency,
                progress=self._log_progress,
                on_outcome=lambda o: self.notifier.outcome(o, self.kv.config.provider_for(o.key)),
            )
            self.notifier.audit(report.rows)
            self.metrics.record(report, time.perf_counter() - started, self.kv.provider_names())
            for provider, skew in self.rotator.clock_skew.items():
                self.metrics.clock_skew.labels(provider).set(skew)
            unreadable = report.unreadable
            self.last_sweep_ok = not unreadable
            self.last_sweep_problem = (
                "; ".join(f"provider {row.provider} unreadable: {row.note}" for row in unreadable)
                or None
            )
            (log.error if unreadable else log.info)(
                "sweep %s in %.2fs: %d keys, %d rotated, %d failed, %.1f keys/s%s%s",
                "failed" if unreadable else "done",
                time.perf_counter() - started,
                report.keys,
                report.count(Result.ROTATED),
                report.count(Result.FAILED),
                report.rate,
                " (stopped early)" if report.stopped_early else "",
                f"; {self.last_sweep_problem}" if unreadable else "",
            )
        except Exception as exc:
            self.last_sweep_ok = False
            self.last_sweep_problem = f"sweep crashed: {type(exc).__name__}"
            self.metrics.sweeps_failed.inc()
            log.exception("sweep crashed")
        finally:
            self.sweeps += 1
            self.last_sweep_at = self.clock()

    def _log_progress(self, done: int, total: int) -> None:
        """A long sweep says how far it is, every PROGRESS_EVERY seconds (the sweep calls
        this under its own lock, one finished key at a time)."""
        now = self._monotonic()
        if done == 1 or self._progress is None:
            self._progress = (now, now)
        started, logged = self._progress
        if now - logged >= PROGRESS_EVERY and done < total:
            self._progress = (started, now)
            log.info(
                "sweep progress: %d of %d keys, %.1f keys/s",
                done,
                total,
                done / max(now - started, 1e-9),
            )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._http = _serve_http(self)
        self.scheduler.add_job(
            self.sweep_once,
            "interval",
            seconds=self.interval.total_seconds(),
            next_run_time=self.clock(),
            coalesce=True,
            max_instances=1,
            id="sweep",
            misfire_grace_time=None,
        )
        self.scheduler.start()
        log.info(
            "keyvault serve: sweeping every %ss; /healthz and /metrics on http://%s:%d",
            int(self.interval.total_seconds()),
            self.host,
            self.port,
        )

    def stop(self) -> None:
        self.stop_event.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)  # the sweep in hand finishes its current key
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self.notifier.close()
        self.rotator.close()
        self.kv.close()
        log.info("keyvault serve stopped")

    def healthy(self) -> bool:
        return self.scheduler.running and self.last_sweep_ok is not False

    def run_until_signalled(self) -> int:
        logs.configure()
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        stop.wait()
        log.info("signal received: finishing the step in hand")
        self.stop()
        return 0


def _notifier(kv: KeyVault, clock: Callable[[], datetime]) -> Notifier:
    settings = rotation_config(kv).notify
    signing = settings.signing_key
    return Notifier(
        settings.webhook,
        timeout=settings.timeout,
        clock=clock,
        retries=settings.retries,
        backoff=settings.backoff.total_seconds(),
        signing_secret=None
        if signing is None
        else (lambda: kv.keyset(signing).primary.secret.reveal()),
    )


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        service = self.server.service
        if self.path == "/healthz":
            healthy = service.healthy()
            body = json.dumps(
                {
                    "status": "ok" if healthy else "unhealthy",
                    "scheduler_running": service.scheduler.running,
                    "last_sweep_ok": service.last_sweep_ok,
                    "reason": service.last_sweep_problem,
                    "last_sweep_at": None
                    if service.last_sweep_at is None
                    else service.last_sweep_at.isoformat(),
                    "sweeps": service.sweeps,
                }
            ).encode()
            self._send(200 if healthy else 503, "application/json", body)
        elif self.path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(service.metrics.registry))
        else:
            self._send(404, "text/plain", b"not found\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    service: Service


def _serve_http(service: Service) -> _HttpServer:
    try:
        server = _HttpServer((service.host, service.port), _Handler)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {service.host}:{service.port} for /healthz and /metrics: "
            f"{exc.strerror} (choose another with --port)"
        ) from None
    server.service = service
    service.port = server.server_address[1]  # port 0 picks a free one
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    ).start()
    return server
