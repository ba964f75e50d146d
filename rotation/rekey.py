"""Rotating the embedded store's own master key: first key encrypts, all keys decrypt.

1. put a new master key first in the keyring (key file, or a new KMS data key), keeping
   the old one, so every process can still read every value;
2. re-encrypt every value under the new key, in small transactions;
3. drop the old key from the keyring and from the store.

Each stage is visible in what is stored, so an interrupted run picks up where it stopped:
a keyring with more than one key means "step 1 done".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from keyvault.config import Config, FileProviderConfig
from keyvault.crypto import Keyring, MasterKey
from keyvault.errors import ConfigError
from keyvault.masterkey import (
    keyring_from_env,
    keyring_from_file,
    write_key_file,
    write_private_lines,
)
from keyvault.providers.file import FileProvider

log = logging.getLogger("keyvault.rotation")


@dataclass(frozen=True)
class RekeyReport:
    provider: str
    old_key_ids: tuple[str, ...]
    new_key_id: str
    resealed: int
    finished: bool
    note: str = ""


def rekey(config: Config, provider_name: str) -> RekeyReport:
    settings = config.providers.get(provider_name)
    if not isinstance(settings, FileProviderConfig):
        raise ConfigError(
            f"rekey works on the embedded store; {provider_name!r} is not a file provider"
        )
    store_path = config.resolve_path(settings.path)
    if settings.master_key_file is not None:
        return _rekey_key_file(
            provider_name, store_path, config.resolve_path(settings.master_key_file)
        )
    if settings.master_key_kms is not None:
        return _rekey_kms(config, provider_name, settings, store_path)
    return _rekey_env(provider_name, store_path, settings.master_key_variable())


@contextmanager
def _opened(provider_name: str, store_path: Path, ring: Keyring) -> Iterator[FileProvider]:
    """The store, closed whatever happens (an interrupted rekey is resumed by the next)."""
    store = FileProvider(provider_name, store_path, ring)
    try:
        yield store
    finally:
        store.close()


def _rekey_key_file(provider_name: str, store_path: Path, key_path: Path) -> RekeyReport:
    ring = keyring_from_file(key_path)
    if len(ring.keys) == 1:
        ring = Keyring([MasterKey.generate(), *ring.keys])
        write_key_file(key_path, ring.keys, overwrite=True)
        log.info("rekey: new master key %s added to %s", ring.primary.key_id, key_path)
    old_ids = tuple(key.key_id for key in ring.keys[1:])
    with _opened(provider_name, store_path, ring) as store:
        resealed = store.reseal()
        write_key_file(key_path, [ring.primary], overwrite=True)
        store.forget_master_keys()
    return RekeyReport(provider_name, old_ids, ring.primary.key_id, resealed, True)


def _rekey_kms(
    config: Config, provider_name: str, settings: FileProviderConfig, store_path: Path
) -> RekeyReport:
    from keyvault.masterkey_kms import kms_keyring
    from keyvault.providers import boto3_session
    from keyvault.providers.aws.errors import BOTO_CONFIG

    assert settings.master_key_kms is not None
    session = boto3_session(config, provider_name, why="keeps its master key wrapped by AWS KMS")
    kms = session.client(
        "kms",
        region_name=settings.kms_region,
        endpoint_url=settings.kms_endpoint_url,
        config=BOTO_CONFIG,
    )
    wrapped_path = config.resolve_path(settings.wrapped_key_path())
    lines = wrapped_path.read_text(encoding="ascii").split() if wrapped_path.exists() else []
    if not lines:
        raise ConfigError(f"no wrapped master key at {wrapped_path}: nothing to rekey")
    if len(lines) == 1:
        _, new_wrapped = kms_keyring(kms, settings.master_key_kms, None)
        assert new_wrapped is not None
        lines = [new_wrapped, *lines]
        write_private_lines(wrapped_path, lines, overwrite=True)
    ring, _ = kms_keyring(kms, settings.master_key_kms, lines)
    old_ids = tuple(key.key_id for key in ring.keys[1:])
    with _opened(provider_name, store_path, ring) as store:
        resealed = store.reseal()
        write_private_lines(wrapped_path, lines[:1], overwrite=True)
        store.forget_master_keys()
    return RekeyReport(provider_name, old_ids, ring.primary.key_id, resealed, True)


def _rekey_env(provider_name: str, store_path: Path, variable: str) -> RekeyReport:
    ring = keyring_from_env(variable)
    if len(ring.keys) == 1:
        raise ConfigError(
            f"the master key comes from ${variable}, which keyvault cannot rewrite: set it to "
            f"NEW,OLD (a new base64 key first, e.g. from `openssl rand -base64 32`), run "
            "`keyvault rekey` to re-encrypt, then set it to NEW alone"
        )
    old_ids = tuple(key.key_id for key in ring.keys[1:])
    with _opened(provider_name, store_path, ring) as store:
        resealed = store.reseal()
        store.forget_master_keys()
    return RekeyReport(
        provider_name,
        old_ids,
        ring.primary.key_id,
        resealed,
        True,
        note=f"every value is sealed by {ring.primary.key_id}; "
        f"now set ${variable} to the new key alone",
    )
