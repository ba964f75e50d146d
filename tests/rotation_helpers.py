"""Shared pieces for rotation tests: a recording issuer, fault injection, a KeyVault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from keyvault.errors import BackendUnavailableError
from keyvault.providers.base import KeyProvider
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue
from rotation.config import parse_config
from rotation.engine import Rotator
from rotation.errors import IssuerError, VerificationFailed
from rotation.issuers import Issued, IssuerCache
from rotation.issuers.generated import GeneratedIssuer
from tests.conftest import Clock

POLICY = {"max_age": "90d", "warn_age": "80d", "grace": "7d"}


class RecordingIssuer(GeneratedIssuer):
    """A generated issuer that records what it made and revoked, and can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[SecretValue] = []
        self.revoked: list[str] = []  # fingerprints
        self.fail_create = False
        self.fail_verify = False
        self.down = False

    def create(self, key_name: str) -> Issued:
        if self.down or self.fail_create:
            raise IssuerError("issuer unreachable (test)")
        issued = super().create(key_name)
        self.created.append(issued.value)
        return issued

    def verify(self, key_name: str, value: SecretValue) -> None:
        if self.down:
            raise IssuerError("issuer unreachable (test)")
        if self.fail_verify:
            raise VerificationFailed(f"pending key {value.fingerprint} refused (test)")

    def revoke(self, key_name: str, value: SecretValue, ref: str | None) -> None:
        if self.down:
            raise IssuerError("issuer unreachable (test)")
        self.revoked.append(value.fingerprint)


class Faulty:
    """A provider whose ``method`` fails once, before or after doing its work."""

    def __init__(self, inner: KeyProvider, method: str, *, after: bool) -> None:
        self._inner = inner
        self._method = method
        self._after = after
        self.fired = False

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr != self._method or self.fired:
            return value

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.fired = True
            if not self._after:
                raise BackendUnavailableError(f"crash before {attr} (test)")
            value(*args, **kwargs)
            raise BackendUnavailableError(f"crash after {attr} (test)")

        return wrapped


def make_kv(provider: Any, **config: Any) -> KeyVault:
    """A KeyVault whose only provider is ``provider`` (its config table is a stand-in)."""
    data: dict[str, Any] = {
        "providers": {provider.name: {"type": "file"}},
        "policies": {"default": POLICY},
        **config,
    }
    return KeyVault(parse_config(data), providers={provider.name: provider})


def make_rotator(
    kv: KeyVault,
    issuer: Any,
    clock: Clock,
    *,
    backend_ahead: timedelta = timedelta(),
    claim_lease: timedelta = timedelta(minutes=10),
) -> Rotator:
    """A rotator on the test clock; the backend's clock is the same clock moved by
    ``backend_ahead`` (negative: this machine runs ahead of the backend)."""
    issuers = IssuerCache(kv)
    issuers.register("generated", issuer)
    return Rotator(
        kv,
        issuers=issuers,
        clock=clock,
        backend_clock=lambda _: clock() + backend_ahead,
        claim_lease=claim_lease,
    )


def now_clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


def days_ago(clock: Clock, days: float) -> datetime:
    return clock.now - timedelta(days=days)
