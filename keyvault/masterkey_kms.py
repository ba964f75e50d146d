"""The embedded store's master key as a KMS data key: wrapped at rest, unwrapped at start.

It belongs with :mod:`keyvault.masterkey` (where master keys come from); it lives apart
because it needs boto3, which only the ``aws`` extra brings.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from keyvault.crypto import Keyring, MasterKey
from keyvault.errors import (
    ConfigError,
)
from keyvault.providers.aws.errors import aws_call

KMS_CONTEXT = {"keyvault:purpose": "file-store-master-key"}


def kms_keyring(
    kms: Any, key_id: str, wrapped_lines: Sequence[str] | None
) -> tuple[Keyring, str | None]:
    """Unwrap the store's master keys with KMS, or make a first one.

    Returns the keyring and, when a new data key was generated, the wrapped form to save.
    """
    target = f"KMS key {key_id}"
    if wrapped_lines:
        keys = []
        for line in wrapped_lines:
            try:
                blob = base64.b64decode(line.strip(), validate=True)
            except ValueError:
                raise ConfigError("wrapped master key file is not base64") from None
            plaintext = aws_call(
                "Decrypt",
                target,
                lambda blob=blob: kms.decrypt(  # type: ignore[misc]
                    CiphertextBlob=blob, KeyId=key_id, EncryptionContext=KMS_CONTEXT
                ),
            )["Plaintext"]
            keys.append(MasterKey(plaintext))
        return Keyring(keys), None
    generated = aws_call(
        "GenerateDataKey",
        target,
        lambda: kms.generate_data_key(
            KeyId=key_id, KeySpec="AES_256", EncryptionContext=KMS_CONTEXT
        ),
    )
    wrapped = base64.b64encode(generated["CiphertextBlob"]).decode("ascii")
    return Keyring([MasterKey(generated["Plaintext"])]), wrapped
