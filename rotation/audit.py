"""Audit rows: one per key across providers, from metadata only.

Every row says name, provider, environment, primary fingerprint, age, max age, status,
secondary and when it will be retired, last rotation, and a note for anything odd. A
provider that cannot be read yields one ``error`` row and the others are still reported.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from keyvault.errors import IntegrityError, KeyNotFoundError, KeyvaultError
from keyvault.model import BrokenKey, KeyInfo, ServerKeyInfo, ServerKeyKind
from keyvault.providers.base import ServerRotatedKeys
from keyvault.registry import KeyVault
from rotation.config import PolicyConfig, rotation_config
from rotation.status import SEVERITY, Status, age, key_status, retire_at, server_key_status


class RowKind(enum.StrEnum):
    """What a row describes: a credential key, a server-rotated key, or (name ``*``) a
    provider that could not be read."""

    CREDENTIAL = "credential"
    AWS_KMS = ServerKeyKind.AWS_KMS.value
    VAULT_TRANSIT = ServerKeyKind.VAULT_TRANSIT.value
    PROVIDER = "provider"


@dataclass(frozen=True, slots=True)
class AuditRow:
    name: str
    provider: str
    kind: RowKind
    status: Status
    environment: str | None = None
    fingerprint: str | None = None
    age: timedelta | None = None
    max_age: timedelta | None = None
    warn_age: timedelta | None = None
    secondary_fingerprint: str | None = None
    secondary_retire_at: datetime | None = None
    last_rotation: datetime | None = None
    pending_fingerprint: str | None = None
    note: str = ""
    server: ServerKeyInfo | None = None
    error_code: int | None = None  # on a provider error row: that error's exit code

    @property
    def severity(self) -> int:
        return SEVERITY[self.status]


def credential_row(kv: KeyVault, info: KeyInfo, now: datetime) -> AuditRow:
    policy = rotation_config(kv).policy_for(info.name)
    notes = []
    if info.current.created_at is None:
        notes.append("creation time unknown: age cannot be judged")
    if info.current.fingerprint is None:
        notes.append("fingerprint unknown (changed outside keyvault?)")
    if info.pending is not None:
        notes.append(f"pending {info.pending.fingerprint} awaiting test and promotion")
    if info.problem is not None:
        notes.insert(0, f"IntegrityError: {info.problem}")
    environment = kv.environment_of(info.name, info.environment)
    return AuditRow(
        name=info.name,
        provider=info.provider,
        kind=RowKind.CREDENTIAL,
        status=Status.ERROR if info.problem is not None else key_status(info, policy, now),
        error_code=IntegrityError.exit_code if info.problem is not None else None,
        environment=environment,
        fingerprint=info.current.fingerprint,
        age=age(info.current.created_at, now),
        max_age=policy.max_age,
        warn_age=policy.effective_warn_age,
        secondary_fingerprint=info.previous.fingerprint if info.previous else None,
        secondary_retire_at=retire_at(info, policy),
        last_rotation=info.promoted_at,
        pending_fingerprint=info.pending.fingerprint if info.pending else None,
        note="; ".join(notes),
    )


def broken_row(broken: BrokenKey) -> AuditRow:
    """A key whose record cannot be trusted: an error row for it alone."""
    return AuditRow(
        name=broken.name,
        provider=broken.provider,
        kind=RowKind.CREDENTIAL,
        status=Status.ERROR,
        note=f"{type(broken.error).__name__}: {broken.error}",
        error_code=broken.error.exit_code,
    )


def server_key_policy(kv: KeyVault, name: str) -> PolicyConfig:
    """A server-rotated key's policy: its ``[keys."<id>"]`` entry's, else the default."""
    config = rotation_config(kv)
    return config.policy_for(name) if name in config.keys else config.policies["default"]


def server_row(kv: KeyVault, info: ServerKeyInfo, now: datetime) -> AuditRow:
    policy = server_key_policy(kv, info.name)
    notes = []
    if info.auto_rotation is False:
        notes.append("automatic rotation is off")
    elif info.rotation_period is not None:
        notes.append(f"rotates itself every {info.rotation_period.days}d")
    return AuditRow(
        name=info.name,
        provider=info.provider,
        kind=RowKind(info.kind),
        status=server_key_status(info, policy, now),
        fingerprint=f"v{info.latest_version}",
        age=age(info.created_at, now),
        max_age=policy.max_age,
        warn_age=policy.effective_warn_age,
        last_rotation=info.last_rotated_at,
        note="; ".join(notes),
        server=info,
    )


def audit(
    kv: KeyVault,
    now: datetime,
    *,
    provider: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[AuditRow]:
    """Rows for every key, worst status first, then by name. ``progress(provider, done,
    total)`` is told as each provider has been read."""
    rows: list[AuditRow] = []
    names = [provider] if provider is not None else kv.provider_names()
    for done, provider_name in enumerate(names, start=1):
        try:
            backend = kv.provider(provider_name)
            rows.extend(
                broken_row(info) if isinstance(info, BrokenKey) else credential_row(kv, info, now)
                for info in backend.iter_keys()
            )
            if isinstance(backend, ServerRotatedKeys):
                rows.extend(server_row(kv, info, now) for info in backend.list_server_keys())
        except KeyvaultError as exc:
            rows.append(
                AuditRow(
                    name="*",
                    provider=provider_name,
                    kind=RowKind.PROVIDER,
                    status=Status.ERROR,
                    note=f"{type(exc).__name__}: {exc}",
                    error_code=exc.exit_code,
                )
            )
        if progress is not None:
            progress(provider_name, done, len(names))
    rows.extend(_missing_rows(kv, rows, names))
    rows.sort(key=lambda row: (-row.severity, row.provider, row.name))
    return rows


def _missing_rows(kv: KeyVault, rows: list[AuditRow], providers: list[str]) -> list[AuditRow]:
    """A key the config names that its (readable) provider does not hold: an error row, so
    a typo in a name or a key never created does not pass an audit as an empty table."""
    unreadable = {row.provider for row in rows if row.kind == RowKind.PROVIDER}
    listed = {(row.provider, row.name) for row in rows}
    missing = []
    for name in kv.config.keys:
        provider = kv.config.provider_for(name)
        if provider not in providers or provider in unreadable or (provider, name) in listed:
            continue
        missing.append(
            AuditRow(
                name=name,
                provider=provider,
                kind=RowKind.CREDENTIAL,
                status=Status.ERROR,
                note=f'configured in [keys."{name}"] but provider {provider!r} has no such key '
                f"(create it: `keyvault put {name}`)",
                error_code=KeyNotFoundError.exit_code,
            )
        )
    return missing
