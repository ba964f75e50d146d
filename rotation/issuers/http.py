"""An upstream admin API that creates, checks and revokes keys, driven by config."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from keyvault.secret import SecretValue
from rotation.config import HttpIssuerConfig
from rotation.errors import IssuerError, VerificationFailed
from rotation.issuers import Issued
from rotation.issuers.requests import header_value, json_path, send

if TYPE_CHECKING:
    from keyvault.registry import KeyVault


class HttpIssuer:
    can_create = True

    def __init__(self, config: HttpIssuerConfig, kv: KeyVault, client: httpx.Client | None = None):
        self.config = config
        self.kv = kv
        self._owns_client = client is None
        self.client = client or httpx.Client(timeout=config.timeout)

    def close(self) -> None:
        """Close the HTTP client made here (one passed in belongs to the caller)."""
        if self._owns_client:
            self.client.close()

    def _admin_headers(self) -> dict[str, str]:
        if self.config.admin_key is None:
            return {}
        admin = self.kv.keyset(self.config.admin_key).primary.secret
        return {self.config.admin_header: header_value(self.config.admin_header, admin)}

    def create(self, key_name: str, *, idempotency_key: str | None = None) -> Issued:
        """With ``idempotency_key`` (one per rotation), an API that honours the header
        returns the key it made the first time when a resumed rotation asks again."""
        spec = self.config.create
        headers = self._admin_headers()
        if idempotency_key is not None and self.config.idempotency_header:
            headers[self.config.idempotency_header] = idempotency_key
        response = send(
            self.client,
            spec,
            purpose="create",
            values={"name": key_name},
            headers=headers,
        )
        if response.status_code not in spec.expect:
            raise IssuerError(f"create request {spec.url} answered {response.status_code}")
        try:
            document = response.json()
            value = str(json_path(document, self.config.key_path))
            ref = (
                None
                if self.config.id_path is None
                else str(json_path(document, self.config.id_path))
            )
        except (ValueError, KeyError):
            raise IssuerError(
                f"create response from {spec.url} has no {self.config.key_path!r}"
                + (f" / {self.config.id_path!r}" if self.config.id_path else "")
            ) from None
        return Issued(SecretValue(value), ref)

    def verify(self, key_name: str, value: SecretValue) -> None:
        spec = self.config.verify
        if spec is None:
            return
        response = send(
            self.client,
            spec,
            purpose="verify",
            values={"name": key_name},
            headers={self.config.key_header: header_value(self.config.key_header, value)},
        )
        if response.status_code in (401, 403):
            raise VerificationFailed(
                f"key {key_name!r}: pending key {value.fingerprint} was refused by {spec.url} "
                f"({response.status_code})"
            )
        if response.status_code not in spec.expect:
            raise IssuerError(f"verify request {spec.url} answered {response.status_code}")

    def revoke(self, key_name: str, value: SecretValue, ref: str | None) -> None:
        spec = self.config.revoke
        if spec is None:
            return
        if "{id}" in spec.url + str(spec.json_body or "") and ref is None:
            raise IssuerError(
                f"key {key_name!r}: cannot revoke {value.fingerprint}: the issuer's id for it "
                "was not recorded"
            )
        response = send(
            self.client,
            spec,
            purpose="revoke",
            values={"name": key_name, "id": ref or ""},
            headers=self._admin_headers(),
        )
        if response.status_code == 404:
            return  # already gone: revoking is idempotent
        if response.status_code not in spec.expect:
            raise IssuerError(f"revoke request {spec.url} answered {response.status_code}")
