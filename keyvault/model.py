"""The key model: names, versions, stages and the values clients and auditors receive.

All values are frozen dataclasses. ``KeySet`` and ``KeyVersion`` carry ``SecretValue``s;
``KeyInfo`` and ``ServerKeyInfo`` are metadata only, so listing and auditing never need
a secret value to exist in memory.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from keyvault.errors import InvalidKeyName
from keyvault.secret import SecretValue

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._/-]*")
MAX_NAME_LENGTH = 128


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid key name, else raise :class:`InvalidKeyName`."""
    if not isinstance(name, str) or not name:
        raise InvalidKeyName("a key name cannot be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidKeyName(f"key name is {len(name)} characters long; at most 128 allowed")
    if not _NAME_RE.fullmatch(name) or "//" in name or name.endswith("/"):
        raise InvalidKeyName(
            f"invalid key name {name!r}: use lower-case letters, digits and . _ / - "
            "(starting with a letter or digit, no empty path segment)"
        )
    return name


def utcnow() -> datetime:
    return datetime.now(UTC)


class Stage(enum.StrEnum):
    CURRENT = "current"  # the primary: what clients send
    PREVIOUS = "previous"  # the secondary: still valid through the grace period
    PENDING = "pending"  # staged and being verified; never sent by clients


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One version of a key with its secret. ``version`` is the backend's own id."""

    version: str
    secret: SecretValue
    created_at: datetime | None
    #: the issuer's id for this key (to revoke it later), when the issuer has one
    ref: str | None = None

    @property
    def fingerprint(self) -> str:
        return self.secret.fingerprint


@dataclass(frozen=True, slots=True)
class KeySet:
    """What a client receives: the primary and, during a grace period, the secondary."""

    name: str
    primary: KeyVersion
    secondary: KeyVersion | None = None
    environment: str | None = None

    def candidates(self) -> tuple[KeyVersion, ...]:
        """Primary first, then secondary: the order a client should try them."""
        return (self.primary,) if self.secondary is None else (self.primary, self.secondary)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A version's metadata: what an audit may see."""

    version: str
    fingerprint: str
    created_at: datetime | None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key's metadata without any secret value.

    ``promoted_at`` is when the current version became current (the last rotation);
    the previous version's retire time is ``promoted_at + grace`` under the key's policy.
    """

    name: str
    provider: str
    current: VersionInfo
    previous: VersionInfo | None = None
    pending: VersionInfo | None = None
    environment: str | None = None
    promoted_at: datetime | None = None
    writable: bool = True


@dataclass(frozen=True, slots=True)
class ServerKeyInfo:
    """A key a server rotates itself (AWS KMS, Vault Transit): clients never get material.

    It has an age (of its newest version), a rotation period if the server rotates it on
    a schedule, and a rotate action on its provider.
    """

    name: str
    provider: str
    kind: str
    latest_version: str
    created_at: datetime | None
    last_rotated_at: datetime | None = None
    auto_rotation: bool | None = None
    rotation_period: timedelta | None = None
    min_decryption_version: str | None = None
