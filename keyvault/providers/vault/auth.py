"""Vault authentication: a token from the environment, or AppRole, kept valid (renewed at
half its TTL, logged in again when refused)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions as hvac_errors

from keyvault.errors import (
    AuthError,
    ConfigError,
)


@dataclass(frozen=True, slots=True)
class AppRoleLogin:
    """Where the AppRole credentials come from (names of variables or a file, never values)."""

    role_id_env: str
    secret_id_env: str | None = None
    secret_id_file: Path | None = None
    mount: str = "approle"

    def credentials(self, environ: Mapping[str, str]) -> tuple[str, str]:
        role_id = environ.get(self.role_id_env)
        if not role_id:
            raise ConfigError(f"AppRole role id variable {self.role_id_env} is not set")
        if self.secret_id_file is not None:
            try:
                secret_id = self.secret_id_file.read_text().strip()
            except OSError:
                raise ConfigError(
                    f"AppRole secret id file {self.secret_id_file} cannot be read"
                ) from None
        elif self.secret_id_env is not None:
            secret_id = environ.get(self.secret_id_env, "")
            if not secret_id:
                raise ConfigError(f"AppRole secret id variable {self.secret_id_env} is not set")
        else:
            raise ConfigError("AppRole needs secret_id_env or secret_id_file")
        return role_id, secret_id


class TokenKeeper:
    """Keeps the client's token valid: renews before expiry, logs in again via AppRole.

    A token from the environment that cannot be renewed is used until the server refuses
    it; then the error says so.
    """

    RENEW_AFTER = 0.5  # renew once half the TTL has passed, as Vault Agent does

    def __init__(
        self,
        client: hvac.Client,
        *,
        token_env: str,
        approle: AppRoleLogin | None,
        environ: Mapping[str, str],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._token_env = token_env
        self._approle = approle
        self._environ = environ
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._ready = False
        self._renew_at: float | None = None
        self._renewable = False

    def ensure(self) -> None:
        with self._lock:
            if not self._ready:
                self._authenticate()
            elif self._renew_at is not None and self._monotonic() >= self._renew_at:
                self._refresh()

    def relogin(self) -> bool:
        """After a 403: with AppRole, log in again (the token may have expired)."""
        if self._approle is None:
            return False
        with self._lock:
            self._login()
        return True

    def _authenticate(self) -> None:
        if self._approle is not None:
            self._login()
            return
        token = self._environ.get(self._token_env)
        if not token:  # never hvac's implicit ~/.vault-token: only what the config names
            raise ConfigError(f"Vault token variable {self._token_env} is not set")
        self._client.token = token
        self._ready = True
        try:
            data = self._client.auth.token.lookup_self()["data"]
        except hvac_errors.Forbidden:
            raise AuthError(
                f"Vault token from {self._token_env} is invalid, expired or revoked"
            ) from None
        self._schedule(data.get("ttl") or 0, bool(data.get("renewable")))

    def _login(self) -> None:
        assert self._approle is not None
        role_id, secret_id = self._approle.credentials(self._environ)
        try:
            auth = self._client.auth.approle.login(
                role_id=role_id, secret_id=secret_id, mount_point=self._approle.mount
            )["auth"]
        except (hvac_errors.InvalidRequest, hvac_errors.Forbidden):
            raise AuthError("AppRole login refused: wrong role id or secret id") from None
        self._ready = True
        self._schedule(auth.get("lease_duration") or 0, bool(auth.get("renewable")))

    def _refresh(self) -> None:
        if self._renewable:
            try:
                auth = self._client.auth.token.renew_self()["auth"]
                self._schedule(auth.get("lease_duration") or 0, bool(auth.get("renewable")))
                return
            except hvac_errors.VaultError:
                pass
        if self._approle is not None:
            self._login()
        else:
            self._renew_at = None  # nothing more we can do; the server will tell

    def _schedule(self, ttl: int, renewable: bool) -> None:
        self._renewable = renewable
        self._renew_at = None if ttl <= 0 else self._monotonic() + ttl * self.RENEW_AFTER
