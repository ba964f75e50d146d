"""AWS KMS keys as server-rotated keys: their age, rotation status and on-demand rotation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from keyvault.errors import (
    ConfigError,
)
from keyvault.model import (
    ServerKeyInfo,
    ServerKeyKind,
)
from keyvault.providers.aws.errors import aws_call
from keyvault.providers.aws.tags import aware


class KmsKeys:
    """The configured KMS keys of one account and region."""

    def __init__(self, provider: str, kms: Any, keys: Sequence[str]) -> None:
        self.provider = provider
        self.kms = kms
        self.keys = tuple(keys)

    def _kms(self) -> Any:
        if self.kms is None:
            raise ConfigError(f"provider {self.provider!r} has no KMS client (kms_keys needs one)")
        return self.kms

    def _kms_info(self, key_id: str) -> ServerKeyInfo:
        kms = self._kms()
        target = f"KMS key {key_id}"
        meta = aws_call("DescribeKey", target, lambda: kms.describe_key(KeyId=key_id))[
            "KeyMetadata"
        ]
        status = aws_call(
            "GetKeyRotationStatus", target, lambda: kms.get_key_rotation_status(KeyId=key_id)
        )
        rotations: list[dict[str, Any]] = []
        paginator = kms.get_paginator("list_key_rotations")
        for page in aws_call(
            "ListKeyRotations", target, lambda: list(paginator.paginate(KeyId=key_id))
        ):
            rotations.extend(page.get("Rotations", []))
        return kms_key_info(self.provider, key_id, meta, status, rotations)

    def list_server_keys(self) -> list[ServerKeyInfo]:
        return [self._kms_info(key_id) for key_id in self.keys]

    def rotate_server_key(self, name: str) -> ServerKeyInfo:
        kms = self._kms()
        aws_call(
            "RotateKeyOnDemand", f"KMS key {name}", lambda: kms.rotate_key_on_demand(KeyId=name)
        )
        return self._kms_info(name)


def kms_key_info(
    provider: str,
    key_id: str,
    metadata: Mapping[str, Any],
    rotation_status: Mapping[str, Any],
    rotations: Sequence[Mapping[str, Any]],
) -> ServerKeyInfo:
    """A KMS key's rotation state from DescribeKey, GetKeyRotationStatus and
    ListKeyRotations. KMS has no version numbers: each rotation adds one."""
    dates = [aware(r["RotationDate"]) for r in rotations if r.get("RotationDate")]
    last = max((d for d in dates if d is not None), default=None)
    period = rotation_status.get("RotationPeriodInDays")
    return ServerKeyInfo(
        name=key_id,
        provider=provider,
        kind=ServerKeyKind.AWS_KMS,
        latest_version=str(len(rotations) + 1),
        created_at=last or aware(metadata.get("CreationDate")),
        last_rotated_at=last,
        auto_rotation=bool(rotation_status.get("KeyRotationEnabled")),
        rotation_period=timedelta(days=int(period)) if period else None,
    )
