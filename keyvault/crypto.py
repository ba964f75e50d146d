"""Sealing values at rest: AES-256-GCM under a keyring of master keys.

The shape is ``MultiFernet``'s: the first master key encrypts, every key in the ring
decrypts, so a master key can be rotated (``keyvault rekey``) by putting the new key first,
re-encrypting, then dropping the old one. Each ciphertext records the id of the master key
that sealed it, and binds caller-chosen associated data (the key name and version), so a
ciphertext copied to another row fails to open. Every failure to open is the same opaque
:class:`IntegrityError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyvault.errors import ConfigError, IntegrityError

MASTER_KEY_BYTES = 32
NONCE_BYTES = 12


class MasterKey:
    """32 bytes of key material with a printable id; never shows the bytes."""

    __slots__ = ("_aead", "_mac_key", "_material", "key_id")

    def __init__(self, material: bytes) -> None:
        if len(material) != MASTER_KEY_BYTES:
            raise ConfigError(
                f"a master key must be {MASTER_KEY_BYTES} bytes (base64 of 32 random bytes), "
                f"got {len(material)} bytes"
            )
        self._material = material
        self._aead = AESGCM(material)
        # a separate key for MACs, so no input is ever used under both AES-GCM and HMAC
        self._mac_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"keyvault row mac v1"
        ).derive(material)
        self.key_id = (
            "mk:" + hashlib.sha256(b"keyvault-master-key-id\x00" + material).hexdigest()[:16]
        )

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(MASTER_KEY_BYTES))

    @classmethod
    def from_base64(cls, text: str, *, source: str) -> MasterKey:
        try:
            material = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{source}: master key is not valid base64") from None
        try:
            return cls(material)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_base64(self) -> str:
        return base64.b64encode(self._material).decode("ascii")

    def material(self) -> bytes:
        """The raw bytes, for wrapping under KMS. Nothing else should need them."""
        return self._material

    def __repr__(self) -> str:
        return f"MasterKey({self.key_id})"

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("MasterKey cannot be pickled")


class Sealed(msgspec.Struct, frozen=True):
    """A ciphertext with the id of the master key that sealed it."""

    key_id: str
    nonce: bytes
    ciphertext: bytes


class Keyring:
    """First key encrypts, all keys decrypt."""

    def __init__(self, keys: Iterable[MasterKey]) -> None:
        self._keys: tuple[MasterKey, ...] = tuple(keys)
        if not self._keys:
            raise ConfigError("a keyring needs at least one master key")
        self._by_id = {key.key_id: key for key in self._keys}

    @property
    def primary(self) -> MasterKey:
        return self._keys[0]

    @property
    def keys(self) -> Sequence[MasterKey]:
        return self._keys

    def key_ids(self) -> list[str]:
        return [key.key_id for key in self._keys]

    def tag(self, data: bytes) -> str:
        """An HMAC-SHA256 of ``data`` under the primary key, prefixed by that key's id."""
        key = self.primary
        return f"{key.key_id}:{hmac.digest(key._mac_key, data, 'sha256').hex()}"

    def tagged_by_primary(self, tag: str | None) -> bool:
        return tag is not None and tag.startswith(self.primary.key_id + ":")

    def verify(self, data: bytes, tag: str | None) -> bool:
        """Whether ``tag`` is a MAC of ``data`` under any key in the ring."""
        if not tag:
            return False
        key_id, _, mac = tag.rpartition(":")
        key = self._by_id.get(key_id)
        if key is None:
            return False
        expected = hmac.digest(key._mac_key, data, "sha256").hex()
        return hmac.compare_digest(expected, mac)

    def seal_with(self, key_id: str, plaintext: bytes, associated_data: bytes) -> Sealed:
        """Seal under one named key of the ring (the store's per-key check values)."""
        key = self._by_id[key_id]
        nonce = os.urandom(NONCE_BYTES)
        return Sealed(key_id, nonce, key._aead.encrypt(nonce, plaintext, associated_data))

    def seal(self, plaintext: bytes, associated_data: bytes) -> Sealed:
        return self.seal_with(self.primary.key_id, plaintext, associated_data)

    def open(self, sealed: Sealed, associated_data: bytes) -> bytes:
        key = self._by_id.get(sealed.key_id)
        if key is None:
            raise IntegrityError(
                f"value was sealed with master key {sealed.key_id}, which is not configured "
                "(wrong master key?)"
            )
        try:
            return key._aead.decrypt(sealed.nonce, sealed.ciphertext, associated_data)
        except InvalidTag:
            raise IntegrityError(
                "stored value failed authentication: the store was tampered with or the "
                "master key is wrong"
            ) from None
