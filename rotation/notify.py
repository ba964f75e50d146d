"""Webhook notifications: one JSON event per rotation, failure and newly overdue key.

Delivery is best effort: a webhook that is down is logged and never stops a sweep.
Events carry names, fingerprints and details, never values.
"""

from __future__ import annotations

import logging
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
    ):
        self.url = url
        self._owns_client = client is None
        self._client = client or (httpx.Client(timeout=timeout) if url else None)
        self._clock = clock
        self._overdue: set[tuple[str, str]] = set()
        self.sent = 0

    def close(self) -> None:
        """Close the HTTP client this notifier made (not one it was given)."""
        if self._owns_client and self._client is not None:
            self._client.close()

    def _post(self, event: dict[str, Any]) -> None:
        if self.url is None or self._client is None:
            return
        try:
            response = self._client.post(self.url, json={**event, "at": self._clock().isoformat()})
            response.raise_for_status()
            self.sent += 1
        except httpx.HTTPError as exc:
            log.warning("webhook %s failed: %s", event.get("event"), type(exc).__name__)

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
