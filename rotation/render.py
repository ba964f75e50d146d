"""Turning metadata into what people and machines read. No secret value reaches here:
everything rendered is ``KeyInfo``/``VersionInfo`` (fingerprints, versions, times)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keyvault.access import AccessEvent
from keyvault.model import KeyInfo, VersionInfo, VersionRecord
from rotation.engine import Outcome
from rotation.plan import Result

if TYPE_CHECKING:
    from rich.progress import Progress


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def age_days(created_at: datetime | None, now: datetime) -> float | None:
    if created_at is None:
        return None
    return round((now - created_at).total_seconds() / 86400, 2)


def version_json(info: VersionInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "version": info.version,
        "fingerprint": info.fingerprint,
        "created_at": iso(info.created_at),
    }


def key_json(info: KeyInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "provider": info.provider,
        "environment": info.environment,
        "primary": version_json(info.current),
        "secondary": version_json(info.previous),
        "pending": version_json(info.pending),
    }


def list_row_json(info: KeyInfo, now: datetime) -> dict[str, Any]:
    return {
        "name": info.name,
        "provider": info.provider,
        "fingerprint": info.current.fingerprint,
        "age_days": age_days(info.current.created_at, now),
    }


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def _age_text(created_at: datetime | None, now: datetime) -> str:
    days = age_days(created_at, now)
    return "unknown" if days is None else f"{days:.1f}d"


def key_table(info: KeyInfo, now: datetime) -> Table:
    title = f"{escape(info.name)}  [dim](provider {escape(info.provider)}"
    title += f", environment {escape(info.environment)})[/dim]" if info.environment else ")[/dim]"
    table = Table(title=title, title_justify="left")
    for column in ("stage", "version", "fingerprint", "created", "age"):
        table.add_column(column)
    for stage, version in (
        ("primary", info.current),
        ("secondary", info.previous),
        ("pending", info.pending),
    ):
        if version is not None:
            table.add_row(
                stage,
                escape(version.version),
                escape(version.fingerprint or "unknown"),
                iso(version.created_at) or "unknown",
                _age_text(version.created_at, now),
            )
    return table


def list_table(keys: list[KeyInfo], now: datetime) -> Table:
    table = Table()
    for column in ("name", "provider", "fingerprint", "age"):
        table.add_column(column)
    for info in keys:
        table.add_row(
            escape(info.name),
            escape(info.provider),
            escape(info.current.fingerprint or "unknown"),
            _age_text(info.current.created_at, now),
        )
    return table


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "key": outcome.key,
        "result": str(outcome.result),
        "steps": [str(step) for step in outcome.steps],
        "failed_step": None if outcome.failed_step is None else str(outcome.failed_step),
        "detail": outcome.detail,
    }


_RESULT_STYLE: dict[Result, str] = {
    Result.ROTATED: "green",
    Result.RETIRED: "green",
    Result.UNCHANGED: "dim",
    Result.WAITING: "yellow",
    Result.PLANNED: "cyan",
    Result.CONFLICT: "yellow",
    Result.NEEDS_STAGING: "red",
    Result.FAILED: "bold red",
    Result.READ_ONLY: "dim",
}


def outcome_table(outcomes: list[Outcome], *, dry_run: bool = False) -> Table:
    table = Table(title="dry run: nothing was changed" if dry_run else None, title_justify="left")
    for column in ("key", "result", "steps", "detail"):
        table.add_column(column)
    for outcome in outcomes:
        style = _RESULT_STYLE[outcome.result]
        steps = " → ".join(str(step) for step in outcome.steps) or "-"
        if outcome.failed_step is not None and outcome.result == Result.FAILED:
            steps += f" ✗ {outcome.failed_step}"
        table.add_row(
            escape(outcome.key),
            f"[{style}]{outcome.result}[/{style}]",
            escape(steps),
            escape(outcome.detail),
        )
    if not outcomes:
        table.add_row("-", "[dim]nothing due[/dim]", "-", "")
    return table


def console(stderr: bool = False) -> Console:
    """Rich output; when piped, wide enough that tables keep one line per row."""
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal else 200
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def record_json(record: VersionRecord) -> dict[str, Any]:
    return {
        "version": record.version,
        "fingerprint": record.fingerprint,
        "stage": None if record.stage is None else str(record.stage),
        "created_at": iso(record.created_at),
        "created_by": record.created_by,
        "promoted_at": iso(record.promoted_at),
        "promoted_by": record.promoted_by,
        "retired_at": iso(record.retired_at),
        "retired_by": record.retired_by,
        "revoked": record.revoked,
        "ref": record.ref,
    }


def history_table(name: str, records: list[VersionRecord]) -> Table:
    table = Table(title=f"{escape(name)}: history (newest first)", title_justify="left")
    for column in ("version", "fingerprint", "stage", "created", "promoted", "retired"):
        table.add_column(column, overflow="fold")

    def when(at: datetime | None, by: str | None, extra: str = "") -> str:
        if at is None:
            return "-"
        return escape(f"{iso(at)}{' by ' + by if by else ''}{extra}")

    for r in records:
        revoked = {True: " (revoked)", False: " (revoked by hand)", None: ""}[r.revoked]
        table.add_row(
            escape(r.version),
            escape(r.fingerprint or "unknown"),
            str(r.stage) if r.stage else "retired",
            when(r.created_at, r.created_by),
            when(r.promoted_at, r.promoted_by),
            when(r.retired_at, r.retired_by, revoked),
        )
    return table


def access_json(event: AccessEvent) -> dict[str, Any]:
    return {
        "at": iso(event.at),
        "key": event.key,
        "fingerprint": event.fingerprint,
        "action": event.action,
        "actor": event.actor,
        "provider": event.provider,
        "seq": event.seq,
    }


def access_csv(events: list[AccessEvent]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    fields = ["at", "key", "fingerprint", "action", "actor", "provider", "seq"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for event in events:
        writer.writerow(access_json(event))
    return buffer.getvalue()


def access_table(events: list[AccessEvent]) -> Table:
    table = Table(title="access log (newest first)", title_justify="left")
    for column in ("at", "key", "fingerprint", "action", "actor"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(
            iso(e.at) or "-",
            escape(e.key),
            escape(e.fingerprint),
            escape(e.action),
            escape(e.actor),
        )
    return table


def progress(console: Console, what: str, *, unit: str = "keys") -> Progress:
    """A transient progress bar with count, rate and time left, for a terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} {unit}/s" if speed else f"- {unit}/s")

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
