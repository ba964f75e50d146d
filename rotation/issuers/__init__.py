"""Issuers make and revoke key material.

An issuer answers three questions for the state machine: what is the next key
(``create``; people-staged issuers cannot), does this key work (``verify``), and make this
old key stop working (``revoke``, idempotent: revoking twice is fine). Built-in types are
``generated``, ``http``, ``manual`` and ``anthropic``; others come from the
``keyvault.issuers`` entry-point group: ``name = "package.module:factory"`` where
``factory(options: dict, kv: KeyVault) -> Issuer``.
"""

from __future__ import annotations

import inspect
import uuid
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from keyvault.errors import ConfigError
from keyvault.secret import SecretValue
from rotation.config import (
    AnthropicIssuerConfig,
    GeneratedIssuerConfig,
    HttpIssuerConfig,
    IssuerConfig,
    rotation_config,
)

if TYPE_CHECKING:
    from keyvault.registry import KeyVault

ENTRY_POINT_GROUP = "keyvault.issuers"
_IDEMPOTENCY_NAMESPACE = uuid.UUID("0d6f3f52-61c4-4f0e-8a1e-2f4b1c9e7a15")


@dataclass(frozen=True, slots=True)
class Issued:
    """New key material and the issuer's id for it (to revoke it later)."""

    value: SecretValue
    ref: str | None = None


@runtime_checkable
class Issuer(Protocol):
    #: False for issuers whose keys a person stages (manual, anthropic)
    can_create: bool

    def create(self, key_name: str) -> Issued: ...

    def verify(self, key_name: str, value: SecretValue) -> None:
        """Raise VerificationFailed (or IssuerError when it cannot tell) unless the key works."""

    def revoke(self, key_name: str, value: SecretValue, ref: str | None) -> None: ...


def idempotency_key(token: str) -> str:
    """An opaque, stable key for one rotation (``Idempotency-Key`` style): the same token
    always gives the same key, so an issuer that honours it returns the same new key when a
    resumed rotation asks again."""
    return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, token))


def create_key(issuer: Issuer, key_name: str, key: str) -> Issued:
    """``issuer.create``, with the idempotency key for issuers whose ``create`` takes one
    (plugins written before it existed still work)."""
    parameters = inspect.signature(issuer.create).parameters.values()
    if any(p.name == "idempotency_key" or p.kind is p.VAR_KEYWORD for p in parameters):
        return issuer.create(key_name, idempotency_key=key)  # type: ignore[call-arg]
    return issuer.create(key_name)


def build_issuer(kv: KeyVault, name: str) -> Issuer:
    config: IssuerConfig = rotation_config(kv).issuer_config(name)
    builtin = config.builtin
    if isinstance(builtin, GeneratedIssuerConfig):
        from rotation.issuers.generated import GeneratedIssuer

        return GeneratedIssuer(builtin)
    if config.type == "manual":
        from rotation.issuers.manual import ManualIssuer

        return ManualIssuer()
    if isinstance(builtin, HttpIssuerConfig):
        from rotation.issuers.http import HttpIssuer

        return HttpIssuer(builtin, kv)
    if isinstance(builtin, AnthropicIssuerConfig):
        from rotation.issuers.anthropic import AnthropicIssuer

        return AnthropicIssuer(builtin, kv)
    return _plugin(kv, name, config)


def _plugin(kv: KeyVault, name: str, config: IssuerConfig) -> Issuer:
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == config.type]
    if not found:
        raise ConfigError(
            f"{kv.config.label}: [issuers.{name}] type {config.type!r} is neither built in "
            f"(generated, http, manual, anthropic) nor an installed {ENTRY_POINT_GROUP!r} "
            "entry point"
        )
    factory: Any = found[0].load()
    issuer = factory(config.options, kv)
    if not isinstance(issuer, Issuer):
        raise ConfigError(f"[issuers.{name}] entry point {config.type!r} did not return an issuer")
    return issuer


class IssuerCache:
    """One issuer per configured name, built on first use."""

    def __init__(self, kv: KeyVault) -> None:
        self.kv = kv
        self._issuers: dict[str, Issuer] = {}

    def for_key(self, key_name: str) -> Issuer:
        name = rotation_config(self.kv).key(key_name).issuer
        if name not in self._issuers:
            self._issuers[name] = build_issuer(self.kv, name)
        return self._issuers[name]

    def close(self) -> None:
        """Close what issuers hold (their HTTP clients); safe to call twice."""
        for issuer in self._issuers.values():
            close = getattr(issuer, "close", None)
            if callable(close):
                close()

    def register(self, name: str, issuer: Issuer) -> None:
        """Use ``issuer`` for every key configured with issuer ``name`` (tests, embedding)."""
        self._issuers[name] = issuer
