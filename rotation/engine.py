"""The rotation state machine, one key at a time, every step idempotent.

::

    create   no pending version and the key is due (or forced): ask the issuer, stage it
    test     the issuer's verify, or the key's HTTP probe, with the pending key
    promote  compare-and-set: pending → current, current → previous
    retire   once grace has passed since the promotion: revoke the previous key at the
             issuer, then drop its stage

The engine keeps no state: each call reads the key's stages from the backend and does the
next step, so a crash anywhere is finished by the next run, and two runners on one key make
one rotation — the loser of a compare-and-set sees ConflictError and stands down. Time is a
parameter (``clock``), never read from the wall inside a decision.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from keyvault.access import reading
from keyvault.errors import (
    ConfigError,
    ConflictError,
    IntegrityError,
    KeyvaultError,
    ReadOnlyError,
)
from keyvault.model import KeyInfo, check_ref, check_value, utcnow
from keyvault.providers.base import KeyProvider
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue
from rotation.config import GRACE_MARGIN, PolicyConfig, rotation_config
from rotation.errors import IssuerError, NeedsStaging, VerificationFailed
from rotation.issuers import Issued, IssuerCache, create_key, idempotency_key
from rotation.issuers.requests import header_value, send
from rotation.plan import Plan, Result, Step, plan
from rotation.status import retire_at

__all__ = ["Outcome", "Result", "Rotator", "Step"]

log = logging.getLogger("keyvault.rotation")


@dataclass(frozen=True)
class Outcome:
    key: str
    result: Result
    steps: tuple[Step, ...] = ()
    detail: str = ""
    error: KeyvaultError | None = field(default=None, compare=False)
    failed_step: Step | None = None

    @property
    def ok(self) -> bool:
        return self.result not in (Result.FAILED, Result.NEEDS_STAGING)


def rotation_token(info: KeyInfo) -> str:
    """One rotation's identity, stable while it runs (a resumed run finds its claim and its
    staged version) and new for the next: the current version and when it became current
    (a rollback makes an old version current again, so the version alone would repeat)."""
    since = info.promoted_at.isoformat() if info.promoted_at else "-"
    return f"rotate:{info.name}:{info.current.version}:{since}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return f"uid {os.getuid()}"


class Rotator:
    def __init__(
        self,
        kv: KeyVault,
        *,
        issuers: IssuerCache | None = None,
        clock: Callable[[], datetime] = utcnow,
        probe_client: httpx.Client | None = None,
        backend_clock: Callable[[KeyProvider], datetime | None] | None = None,
        claim_lease: timedelta | None = None,
    ) -> None:
        self.kv = kv
        self.issuers = issuers or IssuerCache(kv)
        self.clock = clock
        self._probe_client = probe_client
        #: the backend's clock (its own time, where it shows one); a parameter for tests
        self.backend_clock = backend_clock or (lambda provider: provider.backend_time_or_none())
        self.claim_lease = (
            rotation_config(kv).service.claim_lease if claim_lease is None else claim_lease
        )
        #: who this runner is in the claims it records (host, pid and a random part)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: provider -> seconds this machine's clock is ahead of the backend's (last seen)
        self.clock_skew: dict[str, float] = {}

    def close(self) -> None:
        """Close the HTTP clients the issuers made."""
        self.issuers.close()

    # -- one key ---------------------------------------------------------------------------

    def advance(self, name: str, *, force: bool = False, dry_run: bool = False) -> Outcome:
        """Take every step that is due for ``name`` now (see :func:`rotation.plan.plan`);
        report what happened."""
        provider = self.kv.provider_for(name)
        if not provider.writable:
            return Outcome(
                name, Result.READ_ONLY, detail=f"provider {provider.name!r} is read-only"
            )
        policy = rotation_config(self.kv).policy_for(name)
        done: list[Step] = []
        step = Step.CREATE
        try:
            info = provider.describe(name)
            if info.problem is not None:
                raise IntegrityError(f"key {name!r}: {info.problem}; nothing was rotated")
            chosen = self._plan(provider, info, policy, force)
            if dry_run:
                return Outcome(name, Result.PLANNED, chosen.steps, chosen.detail)
            for step in chosen.steps:
                if step == Step.RETIRE:
                    info = self._retire(name, info)
                elif step == Step.CREATE:
                    created = self._create(name, info)
                    if created is None:
                        detail = "another runner is rotating it (claimed or staged first)"
                        return Outcome(name, Result.CONFLICT, tuple(done), detail)
                    info = created
                elif step == Step.TEST:
                    self._test(name)
                else:
                    info = self._promote(name, info, policy)
                done.append(step)
            if chosen.result == Result.NEEDS_STAGING:  # after retiring what was due
                raise NeedsStaging(f"key {name!r}: {chosen.detail}")
            if chosen.result == Result.ROTATED:
                return Outcome(
                    name, Result.ROTATED, tuple(done), f"new primary {info.current.fingerprint}"
                )
            return Outcome(name, chosen.result, tuple(done), chosen.detail)
        except ConflictError as exc:
            log.info("key %s: %s lost a compare-and-set; standing down (%s)", name, step, exc)
            return Outcome(name, Result.CONFLICT, tuple(done), str(exc), exc, step)
        except NeedsStaging as exc:
            return Outcome(name, Result.NEEDS_STAGING, tuple(done), str(exc), exc, step)
        except KeyvaultError as exc:
            log.warning("key %s: rotation step %s failed: %s", name, step, exc)
            return Outcome(name, Result.FAILED, tuple(done), str(exc), exc, step)

    def _plan(
        self, provider: KeyProvider, info: KeyInfo, policy: PolicyConfig, force: bool
    ) -> Plan:
        """The plan by our clock; a retire it contains must hold by the backend's too."""
        now = self.clock()
        options = {
            "force": force,
            "window_open": policy.window is None or policy.window.is_open(now),
            "can_create": info.pending is not None or self.issuers.for_key(info.name).can_create,
        }
        chosen = plan(info, policy, now, **options)
        if Step.RETIRE in chosen.steps and not force:
            agreed = self._agreed_now(provider, now)
            if agreed < now:
                chosen = plan(info, policy, agreed, **options)
        return chosen

    def _promote(self, name: str, info: KeyInfo, policy: PolicyConfig) -> KeyInfo:
        assert info.pending is not None
        promoted = self.kv.provider_for(name).promote(
            name, pending_version=info.pending.version, expected_current=info.current.version
        )
        log.info(
            "key %s: promoted %s (%s), previous %s valid until %s",
            name,
            promoted.current.version,
            promoted.current.fingerprint,
            promoted.previous.fingerprint if promoted.previous else "none",
            retire_at(promoted, policy),
        )
        return promoted

    # -- steps -----------------------------------------------------------------------------

    def _agreed_now(self, provider: KeyProvider, now: datetime) -> datetime:
        """The earlier of our clock and the backend's: a replica whose clock runs ahead
        never retires (revokes) a previous key early. Skew beyond the grace margin is
        logged and kept for the service's metric."""
        backend = self.backend_clock(provider)
        if backend is None:
            return now
        skew = (now - backend).total_seconds()
        self.clock_skew[provider.name] = skew
        if abs(skew) > GRACE_MARGIN.total_seconds():
            log.warning(
                "provider %s: this machine's clock is %+.0fs off the backend's, more than the "
                "grace margin (%s); retire decisions use the earlier clock, but fix the clock "
                "(NTP)",
                provider.name,
                skew,
                GRACE_MARGIN,
            )
        return min(now, backend)

    def _create(self, name: str, info: KeyInfo) -> KeyInfo | None:
        """Claim, then create, then stage. The claim is recorded (with compare-and-set)
        before the issuer is asked, so a losing runner never mints a key, and a crash after
        the issuer answered leaves a record the next run resumes: it asks again with the
        same idempotency key (an issuer that honours it returns the same key, which is then
        adopted) and says so in the log."""
        provider = self.kv.provider_for(name)
        issuer = self.issuers.for_key(name)
        token = rotation_token(info)
        held, taken_over = provider.claim(
            name,
            token=token,
            owner=self.owner,
            expected_current=info.current.version,
            lease=self.claim_lease,
        )
        if not held:
            return None
        if taken_over is not None:
            log.warning(
                "key %s: resuming rotation %s claimed by %s at %s that never staged its key; "
                "asking the issuer again with the same idempotency key",
                name,
                token,
                taken_over.owner,
                taken_over.claimed_at,
            )
        try:
            issued: Issued = create_key(issuer, name, idempotency_key(token))
        except BaseException:
            provider.release_claim(name, token=token, owner=self.owner)
            raise
        try:
            check_value(issued.value.reveal())
            if issued.ref is not None:
                check_ref(issued.ref)
        except KeyvaultError as exc:
            self._withdraw(name, issued, token)
            raise IssuerError(f"key {name!r}: the issuer returned an unusable key: {exc}") from None
        try:
            staged = provider.stage(name, issued.value, request_token=token, ref=issued.ref)
        except ConflictError:
            self._withdraw(name, issued, token)
            return None
        except KeyvaultError:
            # the stage may or may not have landed: look before revoking anything. Ours
            # staged -> the next run tests and promotes it; not staged -> revoke it now; the
            # backend unreadable -> keep the claim, which tells the next run
            pending = provider.describe(name).pending
            if pending is None or pending.fingerprint != issued.value.fingerprint:
                self._withdraw(name, issued, token)
            raise
        if staged.pending is None or staged.pending.fingerprint != issued.value.fingerprint:
            self._withdraw(name, issued, token)  # another runner's stage with the same token won
            return None
        log.info("key %s: staged %s", name, issued.value.fingerprint)
        return staged

    def _withdraw(self, name: str, issued: Issued, token: str) -> None:
        """Revoke a key we made but could not stage, so no orphan stays valid upstream; once
        it is revoked, the claim is ended (if the backend lets us)."""
        try:
            self.issuers.for_key(name).revoke(name, issued.value, issued.ref)
        except KeyvaultError as exc:
            log.warning(
                "key %s: could not revoke unused key %s: %s", name, issued.value.fingerprint, exc
            )
            return
        try:
            self.kv.provider_for(name).release_claim(name, token=token, owner=self.owner)
        except KeyvaultError as exc:
            log.warning("key %s: could not end the claim on rotation %s: %s", name, token, exc)

    def _test(self, name: str) -> None:
        provider = self.kv.provider_for(name)
        with reading("test"):
            pending = provider.get_pending(name)
        if pending is None:
            raise ConflictError(f"key {name!r}: the pending version vanished (promoted elsewhere?)")
        self._check(name, pending.secret)

    def _check(self, name: str, value: SecretValue) -> None:
        """Does ``value`` work? The key's probe, or its issuer's own check."""
        if rotation_config(self.kv).key(name).probe is not None:
            self._probe(name, value)
        else:
            self.issuers.for_key(name).verify(name, value)

    def _probe(self, name: str, value: SecretValue) -> None:
        probe = rotation_config(self.kv).key(name).probe
        assert probe is not None
        client = self._probe_client or httpx.Client(timeout=10.0)
        try:
            response = send(
                client,
                probe,
                purpose="probe",
                values={"name": name},
                headers={probe.header: header_value(probe.header, value)},
            )
        finally:
            if self._probe_client is None:
                client.close()
        if response.status_code not in probe.expect:
            raise VerificationFailed(
                f"key {name!r}: probe {probe.method} {probe.url} with pending key "
                f"{value.fingerprint} answered {response.status_code}, expected {probe.expect}"
            )

    def _retire(self, name: str, info: KeyInfo) -> KeyInfo:
        provider = self.kv.provider_for(name)
        previous = info.previous
        assert previous is not None
        with reading("revoke"):
            secondary = provider.get_keyset(name).secondary
        if secondary is None or secondary.version != previous.version:
            raise ConflictError(f"key {name!r}: the previous version changed while retiring")
        self.issuers.for_key(name).revoke(name, secondary.secret, secondary.ref)
        retired = provider.retire(name, expected_previous=previous.version)
        log.info("key %s: retired %s (%s)", name, previous.version, previous.fingerprint)
        return retired

    def rollback(self, name: str) -> KeyInfo:
        """Make the previous key current again during its grace period (``keyvault
        rollback``): checked first with the key's probe or issuer (a previous key already
        revoked upstream would break every client), then the same compare-and-set as a
        promotion, so of two concurrent rollbacks one wins. The demoted key's grace starts
        now; the restored key's age counts from now for the schedule."""
        provider = self.kv.provider_for(name)
        info = provider.describe(name)
        if not provider.writable:
            raise ReadOnlyError(f"provider {provider.name!r} is read-only: nothing to roll back")
        if info.previous is None:
            raise ConfigError(
                f"key {name!r} has no previous version to roll back to (it was retired, or the "
                "key never rotated)"
            )
        if info.problem is not None:
            raise IntegrityError(f"key {name!r}: {info.problem}; nothing was rolled back")
        with reading("rollback-check"):
            secondary = provider.get_keyset(name).secondary
        if secondary is None or secondary.version != info.previous.version:
            raise ConflictError(f"key {name!r}: the previous version changed; read it again")
        try:
            self._check(name, secondary.secret)
        except VerificationFailed as exc:
            raise VerificationFailed(
                f"key {name!r}: the previous key {secondary.fingerprint} no longer works "
                f"upstream (revoked?); not rolling back to it: {exc}"
            ) from None
        rolled = provider.rollback(
            name,
            expected_current=info.current.version,
            expected_previous=info.previous.version,
        )
        log.warning(
            "key %s: rolled back by %s@%s: current %s (%s) restored, %s (%s) is previous until %s",
            name,
            _user(),
            socket.gethostname(),
            rolled.current.version,
            rolled.current.fingerprint,
            info.current.version,
            info.current.fingerprint,
            retire_at(rolled, rotation_config(self.kv).policy_for(name)),
        )
        return rolled

    def retire_now(self, name: str, *, revoked_by_hand: bool = False) -> KeyInfo:
        """Retire the previous version before its grace period ends (``keyvault retire``).

        The issuer revokes it first, as in a rotation. ``revoked_by_hand`` skips the issuer
        for a key it cannot revoke (no recorded id, a damaged record) that the operator
        revoked upstream: the one way to drop a version without an issuer's revoke, and it
        is logged with who said so.
        """
        provider = self.kv.provider_for(name)
        info = provider.describe(name)
        if info.previous is None:
            raise ConfigError(f"key {name!r} has no previous version to retire")
        if not revoked_by_hand:
            if info.problem is not None:
                raise IntegrityError(
                    f"key {name!r}: {info.problem}; if you revoked that key upstream yourself, "
                    f"`keyvault retire {name} --revoked-by-hand`"
                )
            return self._retire(name, info)
        log.warning(
            "key %s: previous version %s (%s) retired WITHOUT an issuer revoke: %s@%s says it "
            "was revoked by hand",
            name,
            info.previous.version,
            info.previous.fingerprint,
            _user(),
            socket.gethostname(),
        )
        return provider.retire(name, expected_previous=info.previous.version, revoked=False)
