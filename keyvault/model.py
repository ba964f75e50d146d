"""The key model: names, versions, stages and the values clients and auditors receive.

All values are frozen msgspec Structs: typed, slotted, immutable value classes like frozen
dataclasses, but defined in C, so the eight here cost the import ~0.1 ms instead of ~4 ms
(every CLI call and every app's first client pays it). ``KeySet`` and ``KeyVersion``
carry ``SecretValue``s; ``KeyInfo`` and ``ServerKeyInfo`` are metadata only, so listing
and auditing never need a secret value to exist in memory.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime, timedelta

import msgspec

from keyvault.errors import InvalidKeyName, InvalidKeyValue, KeyvaultError
from keyvault.secret import SecretValue

#: one path segment: starts with a letter or digit, so ``.``, ``..`` and ``.hidden`` are out
_SEGMENT = r"[a-z0-9][a-z0-9._-]*"
_NAME_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
MAX_NAME_LENGTH = 128


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid key name in canonical form, else raise
    :class:`InvalidKeyName`.

    Canonical means a name is its own normal form: slash-separated segments, none empty, each
    starting with a letter or digit. So no ``.`` or ``..`` segment can walk out of a backend's
    prefix, and no two spellings (``a/./b``, ``a/b``) name one key.
    """
    if not isinstance(name, str) or not name:
        raise InvalidKeyName("a key name cannot be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidKeyName(f"key name is {len(name)} characters long; at most 128 allowed")
    if not _NAME_RE.fullmatch(name):
        shown = name.encode("unicode_escape").decode("ascii")
        raise InvalidKeyName(
            f"invalid key name '{shown}': use lower-case letters, digits and . _ / - in "
            "slash-separated segments that each start with a letter or digit (no empty, "
            "'.' or '..' segment)"
        )
    return name


def key_path(prefix: str, name: str) -> str:
    """Where a backend stores ``name`` under its ``prefix``: checked again here, so no name
    can leave the prefix even if a caller skipped :func:`validate_name`."""
    validate_name(name)
    return prefix + name


#: the largest value keyvault stores: far above any API key or PEM private key, far below
#: every backend's own limit (AWS Secrets Manager: 65,536 bytes)
MAX_VALUE_BYTES = 16 * 1024
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: multi-line values may hold line breaks and tabs, never NUL or other control characters
_CONTROL_OR_TAB = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def check_value(raw: str, *, multiline: bool = False) -> SecretValue:
    """Wrap ``raw`` as a key value, or refuse it with :class:`InvalidKeyValue`.

    Refused: blank values, values over :data:`MAX_VALUE_BYTES`, and any control character
    (NUL, escape, DEL, ...). A line break would let a value inject a second HTTP header, so
    it is refused too unless ``multiline`` (for keys never sent in a header: certificates,
    service-account JSON). Messages name the problem and its position, never the value.
    """
    if not isinstance(raw, str):
        raise InvalidKeyValue("a key value must be text")
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_VALUE_BYTES:
        raise InvalidKeyValue(
            f"the value is {size} bytes; at most {MAX_VALUE_BYTES} bytes are allowed"
        )
    if not raw.strip():
        raise InvalidKeyValue("the value is empty or only whitespace")
    forbidden = _CONTROL_OR_TAB if multiline else _CONTROL
    found = forbidden.search(raw)
    if found is not None:
        char, position = found.group(), found.start()
        if char in "\n\r":
            raise InvalidKeyValue(
                f"the value holds a line break at position {position}; pass --multiline "
                "(`multiline=True`) only for a key that is never sent in an HTTP header"
            )
        raise InvalidKeyValue(
            f"the value holds control character U+{ord(char):04X} at position {position}"
        )
    return SecretValue(raw)


MAX_REF_LENGTH = 256


def check_ref(ref: str) -> str:
    """An issuer's id for a key (what revoke sends back): short printable text."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidKeyValue("an issuer id (--ref) cannot be empty")
    if len(ref) > MAX_REF_LENGTH:
        raise InvalidKeyValue(f"an issuer id is at most {MAX_REF_LENGTH} characters long")
    found = _CONTROL.search(ref)
    if found is not None:
        raise InvalidKeyValue(
            f"an issuer id holds control character U+{ord(found.group()):04X} at position "
            f"{found.start()}"
        )
    return ref


def utcnow() -> datetime:
    return datetime.now(UTC)


class Stage(enum.StrEnum):
    CURRENT = "current"  # the primary: what clients send
    PREVIOUS = "previous"  # the secondary: still valid through the grace period
    PENDING = "pending"  # staged and being verified; never sent by clients


class KeyVersion(msgspec.Struct, frozen=True):
    """One version of a key with its secret. ``version`` is the backend's own id."""

    version: str
    secret: SecretValue
    created_at: datetime | None
    #: the issuer's id for this key (to revoke it later), when the issuer has one
    ref: str | None = None

    @property
    def fingerprint(self) -> str:
        return self.secret.fingerprint


class KeySet(msgspec.Struct, frozen=True):
    """What a client receives: the primary and, during a grace period, the secondary."""

    name: str
    primary: KeyVersion
    secondary: KeyVersion | None = None
    environment: str | None = None

    def candidates(self) -> tuple[KeyVersion, ...]:
        """Primary first, then secondary: the order a client should try them."""
        return (self.primary,) if self.secondary is None else (self.primary, self.secondary)


class Claim(msgspec.Struct, frozen=True):
    """A rotation's intent, recorded before its issuer is asked for a key: who is about to
    create the next version, for which rotation (``token``), since when. Other runners stand
    down instead of minting keys of their own; a claim whose owner died is taken over after
    its lease, and the next run knows an issuer key may already exist for ``token``."""

    token: str
    owner: str
    claimed_at: datetime | None


class VersionInfo(msgspec.Struct, frozen=True):
    """A version's metadata: what an audit may see. ``fingerprint`` is None when the
    backend does not know it (a version written by another tool, before keyvault read it)."""

    version: str
    fingerprint: str | None
    created_at: datetime | None
    ref: str | None = None


class KeyInfo(msgspec.Struct, frozen=True):
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
    #: damage found in a part of the key that is not the primary (a secondary or pending
    #: version that failed authentication): the primary is still served, the rotation
    #: engine refuses to act, and the audit reports the key as an error
    problem: str | None = None
    #: a rotation that is creating the next version (see :class:`Claim`)
    claim: Claim | None = None
    #: when the current version was made current again by a rollback: its age, for the
    #: rotation schedule, counts from then (so the next sweep does not rotate it at once)
    rolled_back_at: datetime | None = None


class VersionRecord(msgspec.Struct, frozen=True):
    """One version in a key's history: what each backend's own records tell of it.
    Unknown facts are None (AWS, for one, does not record when a label moved)."""

    version: str
    fingerprint: str | None
    stage: Stage | None  # now; None once retired
    created_at: datetime | None
    promoted_at: datetime | None = None
    retired_at: datetime | None = None
    #: True when its issuer revoked it before it was retired, False when an operator said it
    #: was revoked by hand, None when it is live or the backend cannot tell
    revoked: bool | None = None
    ref: str | None = None
    created_by: str | None = None
    promoted_by: str | None = None
    retired_by: str | None = None


class BrokenKey(msgspec.Struct, frozen=True):
    """A key a listing found but cannot describe: its stored record failed authentication
    or is not a keyvault entry. Reported as an error row for that key alone."""

    name: str
    provider: str
    error: KeyvaultError


class ServerKeyKind(enum.StrEnum):
    AWS_KMS = "aws-kms"
    VAULT_TRANSIT = "vault-transit"


class ServerKeyInfo(msgspec.Struct, frozen=True):
    """A key a server rotates itself (AWS KMS, Vault Transit): clients never get material.

    It has an age (of its newest version), a rotation period if the server rotates it on
    a schedule, and a rotate action on its provider.
    """

    name: str
    provider: str
    kind: ServerKeyKind
    latest_version: str
    created_at: datetime | None
    last_rotated_at: datetime | None = None
    auto_rotation: bool | None = None
    rotation_period: timedelta | None = None
    min_decryption_version: str | None = None
