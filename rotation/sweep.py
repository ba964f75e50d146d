"""One pass over every key: audit, then advance each rotation that is due.

A failing key or provider never stops the sweep for the others; the report says what
happened to each. Server-rotated keys (KMS, Transit) are rotated here too when due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from keyvault.errors import KeyvaultError
from keyvault.providers.base import ServerRotatedKeys
from keyvault.registry import KeyVault
from rotation.audit import AuditRow, RowKind, audit, server_key_policy
from rotation.engine import Outcome, Result, Rotator
from rotation.status import Status, needs_rotation, server_key_status

log = logging.getLogger("keyvault.rotation")


@dataclass
class SweepReport:
    rows: list[AuditRow] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    server_rotations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopped_early: bool = False
    #: how long the rotations took (the audit before them not counted)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Keys advanced a second."""
        return len(self.outcomes) / self.seconds if self.seconds > 0 else 0.0

    def count(self, result: Result) -> int:
        return sum(1 for outcome in self.outcomes if outcome.result == result)

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(o.result == Result.FAILED for o in self.outcomes)

    @property
    def unreadable(self) -> list[AuditRow]:
        """One row per provider the sweep could not read: then the sweep itself failed,
        however many keys it did rotate elsewhere."""
        return [row for row in self.rows if row.kind == RowKind.PROVIDER]

    @property
    def keys(self) -> int:
        return sum(1 for row in self.rows if row.kind != RowKind.PROVIDER)


def sweep(
    kv: KeyVault,
    rotator: Rotator,
    *,
    now: Callable[[], datetime] | None = None,
    stop: threading.Event | None = None,
    names: Sequence[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
    concurrency: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> SweepReport:
    clock = now or rotator.clock
    report = SweepReport(rows=audit(kv, clock()))
    wanted = set(names) if names is not None else None
    due = [
        row.name
        for row in report.rows
        if (wanted is None or row.name in wanted)
        and row.kind == RowKind.CREDENTIAL
        and row.status not in (Status.ERROR, Status.READ_ONLY)
        and (force or needs_rotation(row.status) or row.status == Status.ROTATING)
    ]
    started = time.perf_counter()
    finished = 0
    finished_lock = threading.Lock()

    def advance(name: str) -> Outcome | None:
        nonlocal finished
        if stop is not None and stop.is_set():
            return None
        outcome = rotator.advance(name, force=force, dry_run=dry_run)
        if on_outcome is not None:
            on_outcome(outcome)
        if progress is not None:
            # report.outcomes fills in submission order behind the workers: count here
            with finished_lock:
                finished += 1
                progress(finished, len(due))
        return outcome

    # keys in parallel (reads and issuer calls overlap); each backend's writes stay paced by
    # its own shared pacer, and its compare-and-set keeps two writers on one key safe
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for outcome in pool.map(advance, due):
            if outcome is None:
                report.stopped_early = True
            else:
                report.outcomes.append(outcome)
    report.seconds = time.perf_counter() - started
    if wanted is None and not dry_run and not report.stopped_early:
        _rotate_server_keys(kv, report, clock(), stop)
    if not dry_run and (report.server_rotations or any(o.steps for o in report.outcomes)):
        report.rows = audit(kv, clock())  # the rows describe the keys as the sweep left them
    return report


def _rotate_server_keys(
    kv: KeyVault, report: SweepReport, now: datetime, stop: threading.Event | None
) -> None:
    for row in report.rows:
        if row.kind in (RowKind.CREDENTIAL, RowKind.PROVIDER) or (
            stop is not None and stop.is_set()
        ):
            continue
        provider = kv.provider(row.provider)
        if not isinstance(provider, ServerRotatedKeys):
            continue
        policy = server_key_policy(kv, row.name)
        try:
            if row.server is not None and needs_rotation(
                server_key_status(row.server, policy, now)
            ):
                provider.rotate_server_key(row.name)
                report.server_rotations.append(row.name)
                log.info("server key %s (%s) rotated", row.name, row.provider)
            provider.retire_server_key_versions(row.name, grace=policy.grace)
        except KeyvaultError as exc:
            report.errors.append(f"server key {row.name}: {exc}")
            log.warning("server key %s: %s", row.name, exc)
