"""Keys from environment variables, for development and CI. Read-only.

``anthropic/prod`` is read from ``ANTHROPIC_PROD`` (primary), ``ANTHROPIC_PROD_SECONDARY``
and ``ANTHROPIC_PROD_CREATED_AT`` (ISO-8601), with an optional prefix on every variable.
Which names exist is not recoverable from variable names (``A_B`` could be ``a/b`` or
``a.b``), so the provider lists the names it is told about: the config's keys that use it
and its own ``keys`` list.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from keyvault.errors import ConfigError, KeyNotFoundError
from keyvault.model import KeyInfo, KeySet, KeyVersion, Stage, VersionInfo
from keyvault.providers.base import KeyProvider
from keyvault.secret import SecretValue


def variable_name(key_name: str, prefix: str = "") -> str:
    return prefix + re.sub(r"[/.\-]", "_", key_name).upper()


class EnvProvider(KeyProvider):
    writable = False

    def __init__(
        self,
        name: str,
        key_names: Iterable[str] = (),
        *,
        prefix: str = "",
        environment: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.environment = environment
        self._names = sorted(set(key_names))
        self._environ = os.environ if environ is None else environ

    def _created_at(self, var: str) -> datetime | None:
        text = self._environ.get(var + "_CREATED_AT")
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ConfigError(
                f"{var}_CREATED_AT is not an ISO-8601 time (e.g. 2026-01-31T09:00:00Z)"
            ) from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def get_keyset(self, name: str) -> KeySet:
        var = variable_name(name, self.prefix)
        primary = self._environ.get(var)
        if not primary:
            raise KeyNotFoundError(f"key {name!r} not found: environment variable {var} is not set")
        created = self._created_at(var)
        secondary_value = self._environ.get(var + "_SECONDARY")
        secondary = (
            KeyVersion("secondary", SecretValue(secondary_value), None) if secondary_value else None
        )
        return KeySet(
            name, KeyVersion("primary", SecretValue(primary), created), secondary, self.environment
        )

    def describe(self, name: str) -> KeyInfo:
        keyset = self.get_keyset(name)
        secondary = keyset.secondary
        return self.key_info(
            name,
            {
                Stage.CURRENT: VersionInfo(
                    "primary", keyset.primary.fingerprint, keyset.primary.created_at
                ),
                Stage.PREVIOUS: None
                if secondary is None
                else VersionInfo(secondary.version, secondary.fingerprint, None),
            },
            environment=self.environment,
            promoted_at=None,
        )

    def list_keys(self) -> list[KeyInfo]:
        return [
            self.describe(name)
            for name in self._names
            if self._environ.get(variable_name(name, self.prefix))
        ]
