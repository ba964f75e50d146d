"""Claude API keys: the Admin API can list and deactivate keys but not create them.

A person creates the next key in the Console and stages it (``keyvault stage NAME``); the
job verifies it with ``GET /v1/models``, promotes it, and after the grace period deactivates
the old key through the Admin API, using an admin key that is itself a keyvault key. The
old key's id is found by its ``partial_key_hint`` (its first and last characters).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from keyvault.secret import SecretValue
from rotation.config import AnthropicIssuerConfig
from rotation.errors import IssuerError, NeedsStaging, VerificationFailed
from rotation.issuers import Issued

if TYPE_CHECKING:
    from keyvault.registry import KeyVault


def matches_hint(value: str, hint: str) -> bool:
    """``sk-ant-api03-R2D...igAA`` matches a key with that prefix and suffix."""
    if "..." not in hint:
        return False
    prefix, suffix = hint.split("...", 1)
    return bool(prefix) and value.startswith(prefix) and value.endswith(suffix)


class AnthropicIssuer:
    can_create = False

    def __init__(
        self, config: AnthropicIssuerConfig, kv: KeyVault, client: httpx.Client | None = None
    ) -> None:
        self.config = config
        self.kv = kv
        self._owns_client = client is None
        self.client = client or httpx.Client(
            base_url=config.base_url,
            timeout=config.timeout,
            headers={"anthropic-version": config.anthropic_version},
        )

    def close(self) -> None:
        """Close the HTTP client made here (one passed in belongs to the caller)."""
        if self._owns_client:
            self.client.close()

    def create(self, key_name: str) -> Issued:
        raise NeedsStaging(
            f"key {key_name!r} is a Claude API key: create the next one in the Console and "
            f"stage it with `keyvault stage {key_name}` (value on stdin)"
        )

    def _request(self, method: str, path: str, key: SecretValue, **kwargs: Any) -> httpx.Response:
        try:
            return self.client.request(method, path, headers={"x-api-key": key.reveal()}, **kwargs)
        except httpx.HTTPError as exc:
            raise IssuerError(
                f"Anthropic API {method} {path} failed: {type(exc).__name__}"
            ) from None

    def verify(self, key_name: str, value: SecretValue) -> None:
        response = self._request("GET", "/v1/models", value)
        if response.status_code in (401, 403):
            raise VerificationFailed(
                f"key {key_name!r}: the Claude API refused pending key {value.fingerprint} "
                f"({response.status_code})"
            )
        if response.status_code != 200:
            raise IssuerError(f"Claude API GET /v1/models answered {response.status_code}")

    def _admin(self) -> SecretValue:
        return self.kv.keyset(self.config.admin_key).primary.secret

    def _all_keys(self, admin: SecretValue) -> list[dict[str, Any]]:
        keys: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            response = self._request("GET", "/v1/organizations/api_keys", admin, params=params)
            if response.status_code in (401, 403):
                raise IssuerError(
                    f"the Admin API refused admin key {self.config.admin_key!r} "
                    f"({response.status_code})"
                )
            if response.status_code != 200:
                raise IssuerError(f"Admin API list keys answered {response.status_code}")
            page = response.json()
            keys.extend(page.get("data", []))
            if not page.get("has_more") or not page.get("last_id"):
                return keys
            params["after_id"] = page["last_id"]

    def revoke(self, key_name: str, value: SecretValue, ref: str | None) -> None:
        admin = self._admin()
        candidates = [
            k
            for k in self._all_keys(admin)
            if matches_hint(value.reveal(), str(k.get("partial_key_hint", "")))
        ]
        if ref is not None:
            candidates = [k for k in candidates if k.get("id") == ref] or candidates
        if not candidates:
            raise IssuerError(
                f"key {key_name!r}: no key in the organisation matches {value.fingerprint}'s "
                "hint; deactivate it in the Console"
            )
        if len(candidates) > 1:
            raise IssuerError(
                f"key {key_name!r}: {len(candidates)} keys match the hint of {value.fingerprint}; "
                "deactivate the right one in the Console"
            )
        found = candidates[0]
        if found.get("status") in ("inactive", "archived"):
            return
        key_id = str(found["id"])
        response = self._request(
            "POST", f"/v1/organizations/api_keys/{key_id}", admin, json={"status": "inactive"}
        )
        if response.status_code != 200:
            raise IssuerError(f"Admin API deactivate {key_id} answered {response.status_code}")
