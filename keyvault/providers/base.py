"""The provider contract every backend implements.

A provider holds *credential keys* (API keys a client sends) with three stages — current
(primary), previous (secondary) and pending — and moves them with compare-and-set, so many
rotation replicas can act on one backend and exactly one of them wins each step. The
backend is the distributed engine; the caller keeps no state between calls.

Some backends also hold *server-rotated keys* (AWS KMS, Vault Transit): keys whose material
never leaves the server. They do not fit the staged contract and have their own small one,
:class:`ServerRotatedKeys`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import NoReturn

from keyvault.access import ChainedFile
from keyvault.errors import (
    ConflictError,
    KeyExistsError,
    KeyNotFoundError,
    KeyvaultError,
    ReadOnlyError,
)
from keyvault.model import (
    BrokenKey,
    Claim,
    KeyInfo,
    KeySet,
    KeyVersion,
    ServerKeyInfo,
    Stage,
    VersionInfo,
    VersionRecord,
    utcnow,
)
from keyvault.secret import SecretValue


class KeyProvider(ABC):
    """A backend that holds credential keys.

    Every method takes key names already validated by :func:`keyvault.model.validate_name`
    (callers go through :class:`keyvault.KeyVault`, which validates once at the edge).
    Version ids are the backend's own strings.
    """

    #: the provider's name in the config (``[providers.<name>]``)
    name: str
    #: whether the write methods work; read-only backends raise ReadOnlyError from them
    writable: bool = True
    #: where reads of values are recorded, for backends without a log of their own (the
    #: registry sets it from ``[access_log]``; the file store keeps its own table)
    access_log: ChainedFile | None = None
    #: True for a backend that records reads itself (the file store's chained table)
    keeps_access_log: bool = False

    # -- reading ---------------------------------------------------------------------------

    @abstractmethod
    def get_keyset(self, name: str) -> KeySet:
        """The primary and (during grace) secondary, with their secret values."""

    @abstractmethod
    def list_keys(self) -> Sequence[KeyInfo | BrokenKey]:
        """Every key's metadata. Must not read or decrypt secret values. A key whose record
        cannot be trusted or read is a :class:`BrokenKey`, so it spoils only its own row."""

    def iter_keys(self) -> Iterator[KeyInfo | BrokenKey]:
        """:meth:`list_keys` one key at a time; backends that can stream override it, so
        a fleet's audit never holds every key's metadata at once."""
        yield from self.list_keys()

    @abstractmethod
    def describe(self, name: str) -> KeyInfo:
        """One key's metadata, including any pending version. No secret values."""

    def history(self, name: str) -> list[VersionRecord]:
        """Every version the backend's own records know of, newest first."""
        raise NotImplementedError(f"{type(self).__name__} keeps no version history")

    def get_pending(self, name: str) -> KeyVersion | None:
        """The pending version with its secret (to test it before promotion)."""
        if not self.writable:
            return None
        raise NotImplementedError(f"{type(self).__name__} does not implement get_pending")

    # -- writing ---------------------------------------------------------------------------

    def create(
        self,
        name: str,
        value: SecretValue,
        *,
        environment: str | None = None,
        created_at: datetime | None = None,
        ref: str | None = None,
    ) -> KeyInfo:
        """Create a new key whose first version is current. KeyExistsError if it exists.
        ``ref`` is the issuer's id for the value, kept to revoke it later."""
        self._refuse_write("create")

    def stage(
        self,
        name: str,
        value: SecretValue,
        *,
        request_token: str | None = None,
        ref: str | None = None,
        replace: str | None = None,
    ) -> KeyInfo:
        """Store ``value`` as the pending version.

        Idempotent per ``request_token``: staging again with the same token returns the
        version staged the first time. A different pending version already present is a
        ConflictError — one rotation at a time — unless ``replace`` names it: then the old
        pending version is swapped for the new one in one write, so a failure leaves the
        old one staged.
        """
        self._refuse_write("stage a version of")

    def claim(
        self,
        name: str,
        *,
        token: str,
        owner: str,
        expected_current: str,
        lease: timedelta,
    ) -> tuple[bool, Claim | None]:
        """Record, with compare-and-set, that ``owner`` is about to ask the issuer for the
        next version of ``name`` (rotation ``token``), before it does.

        Returns ``(held, taken_over)``: ``held`` is True when ``owner`` holds the claim now
        (new, already its own, or taken over from a claim older than ``lease``, returned as
        ``taken_over``); False when another owner's claim is live, a pending version exists
        or the current version is no longer ``expected_current``. Staging with
        ``request_token=token`` ends the claim; so does :meth:`release_claim`.
        """
        self._refuse_write("claim a rotation of")

    def release_claim(self, name: str, *, token: str, owner: str) -> None:
        """End ``owner``'s claim for ``token`` (a failed create); a no-op otherwise."""
        self._refuse_write("release a claim on")

    def promote(self, name: str, *, pending_version: str, expected_current: str) -> KeyInfo:
        """Atomically: pending → current, current → previous.

        Compare-and-set: ConflictError unless the pending version is still
        ``pending_version``, the current one still ``expected_current``, and there is no
        previous version — a previous key may still be live at its issuer, and only
        :meth:`retire` (after the issuer revoked it) may drop it. No promotion ever
        drops a key silently.
        """
        self._refuse_write("promote")

    def rollback(self, name: str, *, expected_current: str, expected_previous: str) -> KeyInfo:
        """Atomically: previous → current, current → previous, during a grace period.

        The same compare-and-set as :meth:`promote`: ConflictError unless the stages still
        hold the versions the caller read (so of two rollbacks, one wins). The promotion
        time becomes now, so the demoted key's grace starts now (never shortened), and
        ``rolled_back_at`` marks when the restored key came back.
        """
        self._refuse_write("roll back")

    def retire(self, name: str, *, expected_previous: str, revoked: bool = True) -> KeyInfo:
        """Drop the previous stage. ConflictError if the previous is not the one expected;
        a no-op if there is no previous any more (a retry after success). ``revoked``
        records whether its issuer revoked it first (False: an operator said it was revoked
        by hand), where the backend keeps such a record."""
        self._refuse_write("retire")

    def discard_pending(self, name: str, *, pending_version: str) -> KeyInfo:
        """Drop a pending version that failed its test, so a new one can be staged."""
        self._refuse_write("discard a pending version of")

    def delete(self, name: str) -> None:
        """Delete the key and every version."""
        self._refuse_write("delete")

    # -- helpers ---------------------------------------------------------------------------

    def backend_time(self) -> datetime | None:
        """The backend's own clock, where it shows one (Vault, AWS), so decisions about grace
        periods do not rest on one replica's clock. None where the backend is this machine."""
        return None

    def backend_time_or_none(self) -> datetime | None:
        """:meth:`backend_time`, or None when the backend cannot say right now."""
        try:
            return self.backend_time()
        except KeyvaultError:
            return None

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections. Safe to call twice."""

    def record_access(self, name: str, fingerprint: str) -> None:
        """A value of ``name`` was read: note it in the configured local access log."""
        if self.access_log is not None:
            self.access_log.append(name, fingerprint, utcnow(), provider=self.name)

    # -- the contract's words and shapes, written once for every backend -----------------

    def not_found(self, name: str) -> KeyNotFoundError:
        return KeyNotFoundError(f"key {name!r} not found in provider {self.name!r}")

    def already_exists(self, name: str) -> KeyExistsError:
        return KeyExistsError(
            f"key {name!r} already exists in provider {self.name!r}; "
            "use `keyvault rotate` to replace its value"
        )

    def key_info(
        self,
        name: str,
        stages: Mapping[Stage, VersionInfo | None],
        *,
        environment: str | None,
        promoted_at: datetime | None,
        problem: str | None = None,
        claim: Claim | None = None,
        rolled_back_at: datetime | None = None,
        missing: type[KeyvaultError] = KeyNotFoundError,
    ) -> KeyInfo:
        """A key's metadata from what each stage holds. A key without a current version is
        ``missing`` (not found where the backend may lag, an integrity error where it
        cannot)."""
        current = stages.get(Stage.CURRENT)
        if current is None:
            raise missing(f"key {name!r} in provider {self.name!r} has no current version")
        return KeyInfo(
            name=name,
            provider=self.name,
            current=current,
            previous=stages.get(Stage.PREVIOUS),
            pending=stages.get(Stage.PENDING),
            environment=environment,
            promoted_at=promoted_at,
            writable=self.writable,
            problem=problem,
            claim=claim,
            rolled_back_at=rolled_back_at,
        )

    def _refuse_write(self, action: str) -> NoReturn:
        if not self.writable:
            raise ReadOnlyError(
                f"provider {self.name!r} ({type(self).__name__}) is read-only: cannot {action} "
                "a key here; change the key where it is defined, or move it to a writable "
                "provider"
            )
        raise NotImplementedError(f"{type(self).__name__} does not implement {action}")


def expect_version(name: str, stage: str, actual: str | None, expected: str) -> None:
    """The compare of compare-and-set, worded once for every backend."""
    if actual != expected:
        raise ConflictError(
            f"key {name!r}: {stage} version is {actual or 'none'}, expected {expected}"
        )


def expect_no_previous(name: str, previous: str | None) -> None:
    """Promotion's guard, worded once: a previous version is retired (revoked) first."""
    if previous is not None:
        raise ConflictError(
            f"key {name!r} still has previous version {previous}, which may be live at its "
            "issuer: retire it (`keyvault rotate`, which revokes it first) before promoting"
        )


def claim_decision(
    current_claim: Claim | None, *, token: str, owner: str, now: datetime, lease: timedelta
) -> tuple[bool, Claim | None]:
    """Whether ``owner`` may hold the claim for ``token`` now, and the stale claim it takes
    over if any: the rule every backend applies inside its compare-and-set."""
    if current_claim is None or current_claim.owner == owner:
        return True, None
    if current_claim.token != token:
        return True, current_claim  # a claim on an older current version: long finished
    started = current_claim.claimed_at
    if started is None or now - started > lease:
        return True, current_claim
    return False, None


def check_rollback(
    name: str,
    current: str | None,
    previous: str | None,
    expected_current: str,
    expected_previous: str,
) -> None:
    """Rollback's compare, worded once: there must be a previous, and both stages must still
    hold what the caller read."""
    if previous is None:
        raise ConflictError(f"key {name!r} has no previous version to roll back to")
    expect_version(name, "current", current, expected_current)
    expect_version(name, "previous", previous, expected_previous)


def check_replace(name: str, pending: str | None, replace: str | None) -> None:
    """Staging's guard, worded once: one pending version at a time, replaced only by name."""
    if replace is not None:
        expect_version(name, "pending", pending, replace)
    elif pending is not None:
        raise ConflictError(
            f"key {name!r} already has pending version {pending}; "
            "promote or discard it before staging another"
        )


class ServerRotatedKeys(ABC):
    """Keys a server rotates itself: an age, a period and a rotate action, no material."""

    @abstractmethod
    def list_server_keys(self) -> list[ServerKeyInfo]:
        """The configured server-rotated keys with their rotation state."""

    @abstractmethod
    def rotate_server_key(self, name: str) -> ServerKeyInfo:
        """Rotate now; old versions keep decrypting."""

    def retire_server_key_versions(self, name: str, *, grace: timedelta) -> ServerKeyInfo | None:
        """Once the newest version is older than ``grace``, stop old versions decrypting,
        where the server lets a client say so (Vault Transit's min_decryption_version).
        None where old versions are the server's to keep (AWS KMS keeps every one)."""
        return None
