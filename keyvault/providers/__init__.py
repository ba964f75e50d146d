"""Backends behind one contract; each is built from its config table.

Backend SDKs are optional extras, imported only when a provider of that type is built, so
an app that uses the file store never imports boto3 or hvac.
"""

from __future__ import annotations

from keyvault.config import Config, EnvProviderConfig, FileProviderConfig
from keyvault.errors import ConfigError
from keyvault.masterkey import keyring_from_env, keyring_from_file
from keyvault.providers.base import KeyProvider, ServerRotatedKeys

__all__ = ["KeyProvider", "ServerRotatedKeys", "build_provider"]


def build_provider(config: Config, name: str) -> KeyProvider:
    """Build the provider ``[providers.<name>]`` describes."""
    try:
        settings = config.providers[name]
    except KeyError:
        raise ConfigError(
            f"{config.source}: no provider named {name!r} (configured: "
            f"{', '.join(sorted(config.providers)) or 'none'})"
        ) from None
    if isinstance(settings, FileProviderConfig):
        return _file_provider(config, name, settings)
    if isinstance(settings, EnvProviderConfig):
        from keyvault.providers.env import EnvProvider

        return EnvProvider(
            name,
            [*settings.keys, *config.keys_for_provider(name)],
            prefix=settings.prefix,
            environment=settings.environment,
        )
    raise ConfigError(f"{config.source}: [providers.{name}] has an unsupported type")


def _file_provider(config: Config, name: str, settings: FileProviderConfig) -> KeyProvider:
    from keyvault.providers.file import FileProvider

    if settings.master_key_file is not None:
        keyring = keyring_from_file(config.resolve_path(settings.master_key_file))
    elif settings.master_key_kms is not None:
        raise ConfigError(
            f"{config.source}: [providers.{name}] master_key_kms needs the aws backend"
        )
    else:
        keyring = keyring_from_env(settings.master_key_variable())
    return FileProvider(name, config.resolve_path(settings.path), keyring)
