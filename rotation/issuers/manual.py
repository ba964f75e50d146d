"""Keys a person obtains and stages (`keyvault stage NAME`); the job verifies and promotes."""

from __future__ import annotations

import logging

from keyvault.secret import SecretValue
from rotation.errors import NeedsStaging
from rotation.issuers import Issued

log = logging.getLogger("keyvault.rotation")


class ManualIssuer:
    can_create = False

    def create(self, key_name: str) -> Issued:
        raise NeedsStaging(
            f"key {key_name!r} is issued by hand: stage the next key with "
            f"`keyvault stage {key_name}` (value on stdin)"
        )

    def verify(self, key_name: str, value: SecretValue) -> None:
        """Only a key's ``probe`` can check a hand-issued key."""

    def revoke(self, key_name: str, value: SecretValue, ref: str | None) -> None:
        log.warning(
            "key %s: previous version %s retired here; revoke it at its issuer by hand",
            key_name,
            value.fingerprint,
        )
