"""keyvault: apps ask for a key (or a client that sends it) and never handle rotation."""

from keyvault.config import Config, load_config
from keyvault.errors import (
    AuthError,
    BackendUnavailableError,
    CircuitOpenError,
    ConfigError,
    ConflictError,
    EnvironmentMismatch,
    IntegrityError,
    InvalidKeyName,
    InvalidKeyValue,
    KeyExistsError,
    KeyNotFoundError,
    KeyvaultError,
    QueueFullError,
    QueueTimeoutError,
    ReadOnlyError,
)
from keyvault.model import KeyInfo, KeySet, KeyVersion, ServerKeyInfo, Stage, VersionInfo
from keyvault.providers.base import KeyProvider, ServerRotatedKeys
from keyvault.registry import KeyVault, load
from keyvault.secret import SecretValue, fingerprint

__all__ = [
    "AuthError",
    "BackendUnavailableError",
    "CircuitOpenError",
    "Config",
    "ConfigError",
    "ConflictError",
    "EnvironmentMismatch",
    "IntegrityError",
    "InvalidKeyName",
    "InvalidKeyValue",
    "KeyExistsError",
    "KeyInfo",
    "KeyNotFoundError",
    "KeyProvider",
    "KeySet",
    "KeyVault",
    "KeyVersion",
    "KeyvaultError",
    "QueueFullError",
    "QueueTimeoutError",
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


def __getattr__(name: str) -> object:
    """``keyvault.client`` after a plain ``import keyvault``, without importing the HTTP
    client stack for apps that never use it."""
    if name == "client":
        import importlib

        return importlib.import_module("keyvault.client")
    raise AttributeError(f"module 'keyvault' has no attribute {name!r}")
