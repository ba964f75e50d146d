"""keyvault: apps ask for a key (or a client that sends it) and never handle rotation."""

from keyvault.config import Config, load_config
from keyvault.errors import (
    AuthError,
    BackendUnavailableError,
    ConfigError,
    ConflictError,
    EnvironmentMismatch,
    IntegrityError,
    InvalidKeyName,
    KeyExistsError,
    KeyNotFoundError,
    KeyvaultError,
    ReadOnlyError,
)
from keyvault.model import KeyInfo, KeySet, KeyVersion, ServerKeyInfo, Stage, VersionInfo
from keyvault.providers.base import KeyProvider, ServerRotatedKeys
from keyvault.registry import KeyVault, load
from keyvault.secret import SecretValue, fingerprint

__all__ = [
    "AuthError",
    "BackendUnavailableError",
    "Config",
    "ConfigError",
    "ConflictError",
    "EnvironmentMismatch",
    "IntegrityError",
    "InvalidKeyName",
    "KeyExistsError",
    "KeyInfo",
    "KeyNotFoundError",
    "KeyProvider",
    "KeySet",
    "KeyVault",
    "KeyVersion",
    "KeyvaultError",
    "ReadOnlyError",
    "SecretValue",
    "ServerKeyInfo",
    "ServerRotatedKeys",
    "Stage",
    "VersionInfo",
    "fingerprint",
    "load",
    "load_config",
]
