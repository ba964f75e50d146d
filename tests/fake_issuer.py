"""A third-party issuer, loaded through the `keyvault.issuers` entry-point group in tests."""

from __future__ import annotations

from typing import Any

from keyvault.secret import SecretValue
from rotation.issuers import Issued


class PrefixIssuer:
    can_create = True

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.revoked: list[str] = []

    def create(self, key_name: str) -> Issued:
        import secrets

        return Issued(SecretValue(self.prefix + secrets.token_hex(16)), ref="plugin-ref")

    def verify(self, key_name: str, value: SecretValue) -> None:
        pass

    def revoke(self, key_name: str, value: SecretValue, ref: str | None) -> None:
        self.revoked.append(value.fingerprint)


def make(options: dict[str, Any], kv: object) -> PrefixIssuer:
    return PrefixIssuer(str(options.get("prefix", "plug_")))
