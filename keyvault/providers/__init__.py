"""Backends behind one contract; each is built from its config table.

Backend SDKs are optional extras, imported only when a provider of that type is built, so
an app that uses the file store never imports boto3 or hvac.
"""

from __future__ import annotations

from keyvault.config import (
    AwsProviderConfig,
    Config,
    EnvProviderConfig,
    FileProviderConfig,
    VaultProviderConfig,
)
from keyvault.crypto import Keyring
from keyvault.errors import ConfigError
from keyvault.extras import missing_extra
from keyvault.masterkey import keyring_from_env, keyring_from_file, write_private_lines
from keyvault.providers.base import KeyProvider, ServerRotatedKeys

__all__ = ["KeyProvider", "ServerRotatedKeys", "build_provider"]


def build_provider(config: Config, name: str, *, create: bool = False) -> KeyProvider:
    """Build the provider ``[providers.<name>]`` describes. ``create`` lets a file
    provider make its store (``keyvault init``); otherwise a missing store is an error."""
    try:
        settings = config.providers[name]
    except KeyError:
        raise ConfigError(
            f"{config.label}: no provider named {name!r} (configured: "
            f"{', '.join(sorted(config.providers)) or 'none'})"
        ) from None
    if isinstance(settings, FileProviderConfig):
        return _file_provider(config, name, settings, create)
    if isinstance(settings, EnvProviderConfig):
        from keyvault.providers.env import EnvProvider

        return EnvProvider(
            name,
            [*settings.keys, *config.keys_for_provider(name)],
            prefix=settings.prefix,
            environment=settings.environment,
        )
    if isinstance(settings, VaultProviderConfig):
        return _vault_provider(config, name, settings)
    if isinstance(settings, AwsProviderConfig):
        return _aws_provider(config, name, settings)
    raise ConfigError(f"{config.label}: [providers.{name}] has an unsupported type")


def _needs_extra(config: Config, name: str, why: str, extra: str) -> ConfigError:
    return missing_extra(f"{config.label}: [providers.{name}] {why}, which", extra)


def _vault_provider(config: Config, name: str, settings: VaultProviderConfig) -> KeyProvider:
    try:
        import hvac

        from keyvault.providers.vault import AppRoleLogin, VaultProvider
    except ImportError:
        raise _needs_extra(config, name, "is a Vault provider", "vault") from None
    verify: bool | str = settings.verify
    if settings.ca_cert is not None:
        verify = str(config.resolve_path(settings.ca_cert))
    client = hvac.Client(
        url=settings.url, namespace=settings.namespace, verify=verify, timeout=settings.timeout
    )
    approle = None
    if settings.role_id_env is not None:
        approle = AppRoleLogin(
            role_id_env=settings.role_id_env,
            secret_id_env=settings.secret_id_env,
            secret_id_file=None
            if settings.secret_id_file is None
            else config.resolve_path(settings.secret_id_file),
            mount=settings.approle_mount,
        )
    return VaultProvider(
        name,
        client,
        mount=settings.mount,
        prefix=settings.prefix,
        token_env=settings.token_env,
        approle=approle,
        transit_mount=settings.transit.mount,
        transit_keys=tuple(settings.transit.keys),
        list_concurrency=settings.list_concurrency,
    )


def _file_provider(
    config: Config, name: str, settings: FileProviderConfig, create: bool
) -> KeyProvider:
    from keyvault.providers.file import FileProvider, missing_store

    path = config.resolve_path(settings.path)
    if not create and not path.exists():
        raise missing_store(path)  # before a KMS data key is made for a store that is not there
    if settings.master_key_file is not None:
        keyring = keyring_from_file(config.resolve_path(settings.master_key_file))
    elif settings.master_key_kms is not None:
        keyring = _kms_keyring(config, name, settings)
    else:
        keyring = keyring_from_env(settings.master_key_variable())
    return FileProvider(name, path, keyring, create=create)


def boto3_session(  # type: ignore[no-untyped-def]
    config: Config, name: str, profile: str | None = None, *, why: str = "is an AWS provider"
):
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise _needs_extra(config, name, why, "aws") from None
    try:
        return boto3.Session(profile_name=profile)
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(
            f"{config.label}: [providers.{name}] profile {profile!r} is not an AWS profile"
        ) from None


def _aws_provider(config: Config, name: str, settings: AwsProviderConfig) -> KeyProvider:
    session = boto3_session(config, name, settings.profile)
    from keyvault.providers.aws import BOTO_CONFIG, AwsProvider

    def client(service: str):  # type: ignore[no-untyped-def]
        return session.client(
            service,
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            config=BOTO_CONFIG,
        )

    return AwsProvider(
        name,
        client("secretsmanager"),
        kms_client=client("kms"),
        prefix=settings.prefix,
        kms_key_id=settings.kms_key_id,
        value_field=settings.value_field,
        kms_keys=settings.kms_keys,
        recovery_window_days=settings.recovery_window_days,
        write_rate=settings.write_rate,
    )


def _kms_keyring(config: Config, name: str, settings: FileProviderConfig) -> Keyring:
    """The store's master key as a data key wrapped by KMS, unwrapped at start-up."""
    session = boto3_session(config, name, why="keeps its master key wrapped by AWS KMS")
    from keyvault.masterkey_kms import kms_keyring
    from keyvault.providers.aws.errors import BOTO_CONFIG

    assert settings.master_key_kms is not None
    kms = session.client(
        "kms",
        region_name=settings.kms_region,
        endpoint_url=settings.kms_endpoint_url,
        config=BOTO_CONFIG,
    )
    path = config.resolve_path(settings.wrapped_key_path())
    lines = path.read_text(encoding="ascii").split() if path.exists() else None
    keyring, wrapped = kms_keyring(kms, settings.master_key_kms, lines)
    if wrapped is not None:
        write_private_lines(path, [wrapped])
    return keyring
