"""Webhook notifications: one JSON event per rotation, failure and newly overdue key.

Deliveries are signed when ``[notify] signing_key`` names a keyvault key: the headers
``X-Keyvault-Timestamp`` (unix seconds) and ``X-Keyvault-Signature: v1=<hex>``, the
HMAC-SHA256 of ``"<timestamp>." + body`` under that key's value, so a receiver can check both
who sent it and that it is fresh. A failure or a 5xx is retried with backoff; each
delivery's outcome is logged and counted, and none ever stops a sweep. Events carry names,
fingerprints and details, never values.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from keyvault.model import utcnow
from rotation.audit import AuditRow
from rotation.engine import Outcome, Result
from rotation.status import Status

log = logging.getLogger("keyvault.notify")


class Notifier:
    def __init__(
        self,
        url: str | None,
        *,
        timeout: float = 5.0,
        client: httpx.Client | None = None,
        clock: Callable[[], datetime] = utcnow,
        signing_secret: Callable[[], str] | None = None,
        retries: int = 3,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = url
        self._owns_client = client is None
        self._client = client or (httpx.Client(timeout=timeout) if url else None)
        self._clock = clock
        self._signing_secret = signing_secret
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep
        self._overdue: set[tuple[str, str]] = set()
        self.sent = 0
        self.failed = 0
        self.on_delivery: Callable[[str], None] = lambda outcome: None

    def close(self) -> None:
        """Close the HTTP client this notifier made (not one it was given)."""
        if self._owns_client and self._client is not None:
            self._client.close()

    def _post(self, event: dict[str, Any]) -> None:
        if self.url is None or self._client is None:
            return
        body = json.dumps({**event, "at": self._clock().isoformat()}).encode()
        headers = {"content-type": "application/json", **self._signature(body)}
        problem = ""
        for attempt in range(self._retries + 1):
            if attempt:
                self._sleep(self._backoff * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
                continue
            if response.status_code < 500:
                delivered = response.is_success
                log.log(
                    logging.INFO if delivered else logging.WARNING,
                    "webhook %s %s: %d after %d attempt(s)",
                    event.get("event"),
                    "delivered" if delivered else "refused",
                    response.status_code,
                    attempt + 1,
                )
                self._count("delivered" if delivered else "refused")
                return
            problem = str(response.status_code)
        log.warning(
            "webhook %s failed after %d attempt(s): %s",
            event.get("event"),
            self._retries + 1,
            problem,
        )
        self._count("failed")

    def _signature(self, body: bytes) -> dict[str, str]:
        if self._signing_secret is None:
            return {}
        stamp = str(int(self._clock().timestamp()))
        digest = hmac.new(
            self._signing_secret().encode(), stamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        return {"X-Keyvault-Timestamp": stamp, "X-Keyvault-Signature": f"v1={digest}"}

    def _count(self, outcome: str) -> None:
        if outcome == "delivered":
            self.sent += 1
        else:
            self.failed += 1
        self.on_delivery(outcome)

    def outcome(self, outcome: Outcome, provider: str | None = None) -> None:
        if outcome.result == Result.ROTATED:
            event = "rotated"
        elif outcome.result in (Result.FAILED, Result.NEEDS_STAGING):
            event = "rotation_failed"
        else:
            return
        self._post(
            {
                "event": event,
                "key": outcome.key,
                "provider": provider,
                "result": str(outcome.result),
                "steps": [str(step) for step in outcome.steps],
                "failed_step": None if outcome.failed_step is None else str(outcome.failed_step),
                "detail": outcome.detail,
            }
        )

    def audit(self, rows: list[AuditRow]) -> None:
        """Announce keys that became overdue since the last sweep this process saw."""
        overdue = {(row.provider, row.name) for row in rows if row.status == Status.OVERDUE}
        for row in rows:
            if (row.provider, row.name) in overdue - self._overdue:
                self._post(
                    {
                        "event": "overdue",
                        "key": row.name,
                        "provider": row.provider,
                        "fingerprint": row.fingerprint,
                        "age_days": None
                        if row.age is None
                        else round(row.age.total_seconds() / 86400, 2),
                        "max_age_days": None if row.max_age is None else row.max_age.days,
                    }
                )
        self._overdue = overdue
