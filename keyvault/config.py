"""The one TOML file: found, parsed, validated, with errors that name file, table and field.

Found by ``--config``, then ``$KEYVAULT_CONFIG``, then ``./keyvault.toml``. It never holds a
secret value, only where to find one (``master_key_env = "..."``, ``token_env = "..."``).
Relative paths are relative to the config file, so a config works from any directory.

This module holds the tables the library reads (providers, keys, client, proxy, access log).
The rotation service's tables (policies, issuers, notify, service) are validated by
``rotation.config.RotationConfig``, a subclass every ``keyvault`` command loads: an app
that loads the file with :func:`load_config` checks the library's tables and the file's shape,
and leaves the service's tables to the service.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec
from msgspec import Meta, field

from keyvault.errors import ConfigError
from keyvault.masterkey import DEFAULT_MASTER_KEY_ENV
from keyvault.schema import Duration, KeyName, Problems, Strict, convert, named_tables

CONFIG_ENV = "KEYVAULT_CONFIG"
DEFAULT_CONFIG_NAME = "keyvault.toml"

Positive = Annotated[float, Meta(gt=0)]
C = TypeVar("C", bound="Config")


class FileProviderConfig(Strict, frozen=True, tag_field="type", tag="file"):
    path: Path = Path(".keyvault/store.db")
    master_key_file: Path | None = None
    master_key_env: str | None = None
    master_key_kms: str | None = None
    master_key_kms_file: Path | None = None
    kms_region: str | None = None
    kms_endpoint_url: str | None = None

    def __post_init__(self) -> None:
        given = [self.master_key_file, self.master_key_env, self.master_key_kms]
        if sum(source is not None for source in given) > 1:
            raise ValueError("set only one of master_key_file, master_key_env and master_key_kms")
        if self.master_key_kms is None and self.master_key_kms_file is not None:
            raise ValueError("master_key_kms_file needs master_key_kms")

    def wrapped_key_path(self) -> Path:
        """Where the KMS-wrapped master key lives (default: beside the store)."""
        return self.master_key_kms_file or self.path.with_name(self.path.name + ".master-key.kms")

    def master_key_variable(self) -> str:
        return self.master_key_env or DEFAULT_MASTER_KEY_ENV


class EnvProviderConfig(Strict, frozen=True, tag_field="type", tag="env"):
    prefix: str = ""
    keys: list[KeyName] = field(default_factory=list)
    environment: str | None = None


class TransitConfig(Strict, frozen=True):
    mount: str = "transit"
    keys: list[str] = field(default_factory=list)


class VaultProviderConfig(Strict, frozen=True, tag_field="type", tag="vault"):
    url: str
    mount: str = "secret"
    prefix: str = "keyvault/"
    namespace: str | None = None
    ca_cert: Path | None = None
    verify: bool = True
    timeout: Positive = 10.0
    token_env: str = "VAULT_TOKEN"  # noqa: S105 - a variable name, not a token
    role_id_env: str | None = None
    secret_id_env: str | None = None
    secret_id_file: Path | None = None
    approle_mount: str = "approle"
    list_concurrency: Annotated[int, Meta(ge=1, le=256)] = 16
    transit: TransitConfig = field(default_factory=TransitConfig)

    def __post_init__(self) -> None:
        if self.role_id_env is None and (self.secret_id_env or self.secret_id_file):
            raise ValueError("secret_id_env / secret_id_file need role_id_env (AppRole)")
        if self.role_id_env is not None and not (self.secret_id_env or self.secret_id_file):
            raise ValueError("AppRole needs secret_id_env or secret_id_file")
        if self.secret_id_env and self.secret_id_file:
            raise ValueError("set only one of secret_id_env and secret_id_file")


class AwsProviderConfig(Strict, frozen=True, tag_field="type", tag="aws"):
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    prefix: str = "keyvault/"
    kms_key_id: str | None = None
    value_field: str | None = None
    kms_keys: list[str] = field(default_factory=list)
    recovery_window_days: Annotated[int, Meta(ge=0, le=30)] = 7
    #: writes a second (PutSecretValue, UpdateSecretVersionStage and UpdateSecret share 50/s
    #: per account and region; TagResource has 50/s of its own): below the quota by default
    write_rate: Positive = 40.0

    def __post_init__(self) -> None:
        if 0 < self.recovery_window_days < 7:
            raise ValueError(
                "recovery_window_days: AWS accepts a recovery window of 7 to 30 days, "
                "or 0 to delete at once"
            )


ProviderConfig = FileProviderConfig | EnvProviderConfig | VaultProviderConfig | AwsProviderConfig
PROVIDER_TYPES = ("file", "env", "vault", "aws")


def _provider(table: Any) -> ProviderConfig:
    if isinstance(table, dict) and table.get("type") not in PROVIDER_TYPES:
        got = table.get("type")
        raise ValueError(
            f"unknown provider type {got!r}; expected one of {', '.join(PROVIDER_TYPES)}"
            if got is not None
            else f"type is missing; set one of {', '.join(PROVIDER_TYPES)}"
        )
    return convert(table, ProviderConfig)  # type: ignore[arg-type]


class KeyConfig(Strict, frozen=True):
    """``[keys."NAME"]``: where the key lives and which environment it serves. ``policy``,
    ``issuer`` and ``probe`` belong to the rotation service, which checks them."""

    provider: str | None = None
    environment: str | None = None
    policy: str = "default"
    issuer: str = "generated"
    probe: dict[str, Any] | None = None


RETRY_METHODS = ("idempotent", "all")


class RetryConfig(Strict, frozen=True):
    """``[client] retry``: attempts in all (the first included), backoff before the first
    retry (doubled each time, full jitter), which statuses are retried, and for which
    methods: ``idempotent`` (GET, PUT, DELETE...; and any method after a 429/503, which say
    the request was not processed) or ``all`` (POST too: right for the Claude API, wrong
    for a payments API)."""

    attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    backoff: Duration = Duration(seconds=1)
    statuses: list[Annotated[int, Meta(ge=400, le=599)]] = field(
        default_factory=lambda: [429, 502, 503, 504, 529]
    )
    methods: str = "idempotent"

    def __post_init__(self) -> None:
        if self.methods not in RETRY_METHODS:
            raise ValueError(
                f"methods: {self.methods!r} is not one of {', '.join(map(repr, RETRY_METHODS))}"
            )


class ResponseCacheConfig(Strict, frozen=True):
    """``[client.response_cache]``: off unless configured; only the listed path prefixes."""

    backend: str = "memory"
    url: str | None = None
    ttl: Duration = Duration(minutes=10)
    max_entries: Annotated[int, Meta(ge=1, le=10_000_000)] = 10_000
    paths: list[str] = field(default_factory=list)
    #: request headers that change the answer, part of every entry's key
    vary: list[str] = field(
        default_factory=lambda: ["accept", "anthropic-version", "anthropic-beta"]
    )
    #: a keyvault key whose value seals the Redis entries (AES-GCM under an HKDF of it)
    seal_key: KeyName | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("memory", "redis"):
            raise ValueError(f"backend: {self.backend!r} is not one of 'memory', 'redis'")
        if not self.paths:
            raise ValueError(
                'paths: list the path prefixes whose answers may be cached, e.g. ["/v1/messages"]'
            )
        for prefix in self.paths:
            if not prefix.startswith("/"):
                raise ValueError(f"paths: {prefix!r} is not a path (it starts with '/')")
        if self.ttl <= timedelta(0):
            raise ValueError("ttl: must be longer than zero")
        if self.backend == "redis":
            if not self.url or not re.fullmatch(r"(redis|rediss|unix)://\S+", self.url):
                raise ValueError('url: the redis backend needs url = "redis://HOST:PORT/DB"')
            if self.seal_key is None:
                raise ValueError(
                    "seal_key: the redis backend seals every entry; name a keyvault key "
                    '(e.g. seal_key = "cache/seal", made with `keyvault put --generate`)'
                )


class ClientConfig(Strict, frozen=True):
    """The thin client's defaults: the key cache (whose TTL also bounds the shortest safe
    grace), timeouts, retries and the per-key limit on requests in flight."""

    cache_ttl: Duration = Duration(minutes=5)
    max_stale: Duration = Duration(hours=1)
    connect_timeout: Duration = Duration(seconds=5)
    #: read timeout of kv.client; kv.anthropic keeps the SDK's own (10 min, sized for long
    #: generations) unless this is set
    timeout: Duration | None = None
    max_in_flight: Annotated[int, Meta(ge=1, le=1000)] = 5
    max_queue: Annotated[int, Meta(ge=0, le=100_000)] = 100
    queue_timeout: Duration = Duration(seconds=60)
    retry: RetryConfig = field(default_factory=RetryConfig)
    response_cache: ResponseCacheConfig | None = None

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "timeout", "queue_timeout"):
            value = getattr(self, name)
            if value is not None and value <= timedelta(0):
                raise ValueError(f"{name}: must be longer than zero")


class ProxyConfig(Strict, frozen=True):
    """``[proxy.<name>]``: a local reverse proxy that adds key ``key`` to every request."""

    key: KeyName
    upstream: str
    listen: str = "127.0.0.1:8788"
    header: str = "x-api-key"  # or "Authorization" (Bearer)
    #: a keyvault key the app must present (in ``header``) to use the proxy; required to
    #: listen anywhere but loopback, where anyone who reaches the port would spend the key
    inbound_token: KeyName | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.upstream):
            raise ValueError(f"upstream {self.upstream!r} is not an http(s) URL")
        msgspec.structs.force_setattr(self, "upstream", self.upstream.rstrip("/"))
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen {self.listen!r} is not HOST:PORT (port 0..65535)")


class AccessLogConfig(Strict, frozen=True):
    """``[access_log]``: a local chained log of value reads for Vault and AWS providers
    (the file store keeps its own, inside the store)."""

    path: Path | None = None
    #: a variable holding base64 of 32+ random bytes, the log's MAC key
    mac_key_env: str = "KEYVAULT_ACCESS_LOG_KEY"


class Config(Strict, frozen=True):
    """The library's view of the file. Subclasses add tables (``RotationConfig``): they list
    theirs in ``NAMED_TABLES`` and extend :meth:`check`."""

    default_provider: str | None = None
    environment: str | None = None
    #: a process with an environment refuses keys that carry no environment label at all
    require_environment: bool = False
    client: ClientConfig = field(default_factory=ClientConfig)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    keys: dict[str, KeyConfig] = field(default_factory=dict)
    proxy: dict[str, ProxyConfig] = field(default_factory=dict)
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    #: the rotation service's tables, checked by ``RotationConfig`` (opaque here)
    policies: dict[str, Any] = field(default_factory=dict)
    issuers: dict[str, Any] = field(default_factory=dict)
    notify: dict[str, Any] = field(default_factory=dict)
    service: dict[str, Any] = field(default_factory=dict)

    #: the file this was loaded from (set by the loader, not a TOML field)
    source: Path | None = None

    #: tables of named entries, converted one entry at a time so errors name the entry
    NAMED_TABLES: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        "providers": _provider,
        "keys": partial(convert, kind=KeyConfig),
        "proxy": partial(convert, kind=ProxyConfig),
    }

    def check(self, problems: Problems) -> None:
        """Rules across tables (references resolve); each broken one is added to ``problems``."""
        if self.default_provider is not None and self.default_provider not in self.providers:
            problems.add(
                "", f"default_provider {self.default_provider!r} is not a table under [providers]"
            )
        if not self.providers:
            problems.add(
                "",
                "no providers are configured: add a [providers.NAME] table (`keyvault init` "
                "writes one for the embedded store)",
            )
        if self.default_provider is None and len(self.providers) > 1:
            problems.add("", "several providers are configured: set default_provider")
        for name, key in self.keys.items():
            if key.provider is not None and key.provider not in self.providers:
                problems.add(
                    f'[keys."{name}"]',
                    f" provider {key.provider!r} is not a table under [providers]",
                )

    @property
    def label(self) -> str:
        """The config file's path for messages ("config" when built in memory)."""
        return str(self.source) if self.source is not None else "config"

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source is not None else Path.cwd()

    def resolve_path(self, path: Path) -> Path:
        return path if path.is_absolute() else self.base_dir / path

    def credential_variables(self) -> set[str]:
        """The environment variables this config reads credentials from (master keys, Vault
        tokens, AppRole secret ids): what a process keyvault starts must not inherit."""
        names: set[str] = set()
        for settings in self.providers.values():
            if isinstance(settings, FileProviderConfig) and settings.master_key_file is None:
                names.add(settings.master_key_variable())
            elif isinstance(settings, VaultProviderConfig):
                names.add(settings.token_env)
                names.update(v for v in (settings.secret_id_env,) if v)
        return names

    def default_provider_name(self) -> str:
        if self.default_provider is not None:
            return self.default_provider
        if len(self.providers) == 1:
            return next(iter(self.providers))
        raise ConfigError(f"{self.label}: no providers configured")

    def provider_for(self, key_name: str) -> str:
        key = self.keys.get(key_name)
        if key is not None and key.provider is not None:
            return key.provider
        for name, settings in self.providers.items():  # an env provider's own `keys` list
            if isinstance(settings, EnvProviderConfig) and key_name in settings.keys:
                return name
        return self.default_provider_name()

    def keys_for_provider(self, provider: str) -> list[str]:
        return [name for name in self.keys if self.provider_for(name) == provider]


# -- finding and loading ---------------------------------------------------------------------


def find_config(explicit: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if explicit is not None:
        candidate, origin = explicit, "--config"
    elif env.get(CONFIG_ENV):
        candidate, origin = Path(env[CONFIG_ENV]), f"${CONFIG_ENV}"
    else:
        candidate = Path(DEFAULT_CONFIG_NAME)
        if not candidate.exists():
            raise ConfigError(
                f"no {DEFAULT_CONFIG_NAME} here: pass --config PATH, set {CONFIG_ENV}, "
                "or run `keyvault init` to create one"
            )
        return candidate.resolve()
    if candidate.is_dir():
        raise ConfigError(
            f"config file {candidate} (from {origin}) is a directory: name the TOML file in "
            f"it, e.g. {candidate / DEFAULT_CONFIG_NAME}"
        )
    if not candidate.is_file():
        raise ConfigError(f"config file {candidate} (from {origin}) does not exist")
    return candidate.resolve()


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None


def load_config(path: Path) -> Config:
    return parse_config(read_toml(path), source=path)


def parse_config(data: dict[str, Any], *, source: Path | None = None) -> Config:
    return parse_as(Config, data, source=source)


def parse_as(schema: type[C], data: Mapping[str, Any], *, source: Path | None = None) -> C:
    """Validate ``data`` as ``schema``: every problem in one :class:`ConfigError`, each line
    naming the file, the table and the field."""
    problems = Problems(str(source) if source is not None else "config")
    tables = named_tables(problems, data, schema.NAMED_TABLES, key_named=frozenset({"keys"}))
    whole = {name: value for name, value in data.items() if name not in tables}
    if "source" in whole:  # set by the loader, never by the file
        problems.add("", "source: unknown field (check the spelling)")
        del whole["source"]
    config = problems.convert("", {**whole, **tables}, partial(convert, kind=schema))
    if config is not None and not problems.lines:  # references between broken tables: noise
        config = msgspec.structs.replace(config, source=source)
        config.check(problems)
    if problems.lines or config is None:
        raise ConfigError("\n".join(problems.lines))
    return config
