"""Vault Transit keys as server-rotated keys: their material never leaves Vault; keyvault
reads their age, rotates them and, after grace, stops old versions decrypting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import hvac

from keyvault.model import ServerKeyInfo, ServerKeyKind
from keyvault.providers.vault.documents import transit_time


class TransitKeys:
    """The configured Transit keys of one Vault, through the provider's error boundary."""

    def __init__(
        self,
        provider: str,
        client: hvac.Client,
        call: Callable[[str, str, Callable[[], Any]], Any],
        *,
        mount: str,
        keys: tuple[str, ...],
        clock: Callable[[], datetime],
    ) -> None:
        self.provider = provider
        self.client = client
        self._call = call
        self.mount = mount
        self.keys = keys
        self._clock = clock

    def _transit(self, name: str) -> ServerKeyInfo:
        path = f"keys/{name}"
        data = self._call(
            "read transit key",
            path,
            lambda: self.client.secrets.transit.read_key(name=name, mount_point=self.mount),
        )["data"]
        latest = int(data["latest_version"])
        versions: dict[str, Any] = data.get("keys") or {}
        created = transit_time(versions.get(str(latest)))
        period = int(data.get("auto_rotate_period") or 0)
        return ServerKeyInfo(
            name=name,
            provider=self.provider,
            kind=ServerKeyKind.VAULT_TRANSIT,
            latest_version=str(latest),
            created_at=created,
            last_rotated_at=created if latest > 1 else None,
            auto_rotation=period > 0,
            rotation_period=timedelta(seconds=period) if period else None,
            min_decryption_version=str(data.get("min_decryption_version", 1)),
        )

    def list_server_keys(self) -> list[ServerKeyInfo]:
        return [self._transit(name) for name in self.keys]

    def rotate_server_key(self, name: str) -> ServerKeyInfo:
        self._transit(name)  # a missing key is "not found", not a refused rotation
        self._call(
            "rotate transit key",
            f"keys/{name}",
            lambda: self.client.secrets.transit.rotate_key(name=name, mount_point=self.mount),
        )
        return self._transit(name)

    def retire_server_key_versions(self, name: str, *, grace: timedelta) -> ServerKeyInfo:
        """Once the newest version is older than ``grace``, stop decrypting older ones."""
        info = self._transit(name)
        latest = int(info.latest_version)
        min_version = int(info.min_decryption_version or 1)
        if (
            min_version < latest
            and info.created_at is not None
            and self._clock() - info.created_at >= grace
        ):
            self._call(
                "configure transit key",
                f"keys/{name}",
                lambda: self.client.secrets.transit.update_key_configuration(
                    name=name, min_decryption_version=latest, mount_point=self.mount
                ),
            )
            info = self._transit(name)
        return info
