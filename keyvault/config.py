"""The one TOML file: found, parsed, validated, with errors that name file, table and field.

Found by ``--config``, then ``$KEYVAULT_CONFIG``, then ``./keyvault.toml``. It never holds a
secret value, only where to find one (``master_key_env = "..."``, ``token_env = "..."``).
Relative paths are relative to the config file, so a config works from any directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from keyvault.durations import format_duration, parse_duration
from keyvault.errors import ConfigError, InvalidKeyName
from keyvault.masterkey import DEFAULT_MASTER_KEY_ENV
from keyvault.model import validate_name

CONFIG_ENV = "KEYVAULT_CONFIG"
DEFAULT_CONFIG_NAME = "keyvault.toml"

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _key_name(value: str) -> str:
    try:
        return validate_name(value)
    except InvalidKeyName as exc:
        raise ValueError(str(exc)) from None


KeyName = Annotated[str, BeforeValidator(_key_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileProviderConfig(_Strict):
    type: Literal["file"]
    path: Path = Path(".keyvault/store.db")
    master_key_file: Path | None = None
    master_key_env: str | None = None
    master_key_kms: str | None = None
    master_key_kms_file: Path | None = None
    kms_region: str | None = None
    kms_endpoint_url: str | None = None

    @model_validator(mode="after")
    def _one_master_key_source(self) -> FileProviderConfig:
        given = [self.master_key_file, self.master_key_env, self.master_key_kms]
        if sum(source is not None for source in given) > 1:
            raise ValueError("set only one of master_key_file, master_key_env and master_key_kms")
        if self.master_key_kms is None and self.master_key_kms_file is not None:
            raise ValueError("master_key_kms_file needs master_key_kms")
        return self

    def wrapped_key_path(self) -> Path:
        """Where the KMS-wrapped master key lives (default: beside the store)."""
        return self.master_key_kms_file or self.path.with_name(self.path.name + ".master-key.kms")

    def master_key_variable(self) -> str:
        return self.master_key_env or DEFAULT_MASTER_KEY_ENV


class EnvProviderConfig(_Strict):
    type: Literal["env"]
    prefix: str = ""
    keys: list[KeyName] = Field(default_factory=list)
    environment: str | None = None


class TransitConfig(_Strict):
    mount: str = "transit"
    keys: list[str] = Field(default_factory=list)


class VaultProviderConfig(_Strict):
    type: Literal["vault"]
    url: str
    mount: str = "secret"
    prefix: str = "keyvault/"
    namespace: str | None = None
    ca_cert: Path | None = None
    verify: bool = True
    timeout: float = Field(default=10.0, gt=0)
    token_env: str = "VAULT_TOKEN"  # noqa: S105 - a variable name, not a token
    role_id_env: str | None = None
    secret_id_env: str | None = None
    secret_id_file: Path | None = None
    approle_mount: str = "approle"
    list_concurrency: int = Field(default=16, ge=1, le=256)
    transit: TransitConfig = Field(default_factory=TransitConfig)

    @model_validator(mode="after")
    def _approle_complete(self) -> VaultProviderConfig:
        if self.role_id_env is None and (self.secret_id_env or self.secret_id_file):
            raise ValueError("secret_id_env / secret_id_file need role_id_env (AppRole)")
        if self.role_id_env is not None and not (self.secret_id_env or self.secret_id_file):
            raise ValueError("AppRole needs secret_id_env or secret_id_file")
        if self.secret_id_env and self.secret_id_file:
            raise ValueError("set only one of secret_id_env and secret_id_file")
        return self


class AwsProviderConfig(_Strict):
    type: Literal["aws"]
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    prefix: str = "keyvault/"
    kms_key_id: str | None = None
    value_field: str | None = None
    kms_keys: list[str] = Field(default_factory=list)
    recovery_window_days: int = Field(default=7, ge=0, le=30)
    #: writes a second (PutSecretValue, UpdateSecretVersionStage and UpdateSecret share 50/s
    #: per account and region; TagResource has 50/s of its own): below the quota by default
    write_rate: float = Field(default=40.0, gt=0)

    @field_validator("recovery_window_days")
    @classmethod
    def _aws_window(cls, value: int) -> int:
        if 0 < value < 7:
            raise ValueError(
                "AWS accepts a recovery window of 7 to 30 days, or 0 to delete at once"
            )
        return value


ProviderConfig = Annotated[
    FileProviderConfig | EnvProviderConfig | VaultProviderConfig | AwsProviderConfig,
    Field(discriminator="type"),
]
PROVIDER_TYPES = ("file", "env", "vault", "aws")


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _cron_field(
    text: str | int, names: tuple[str, ...] | None, low: int, high: int
) -> frozenset[int]:
    """A cron-style field: ``*``, ``9``, ``9-17``, ``mon-fri``, ``sat,sun``."""

    def one(token: str) -> int:
        token = token.strip().lower()
        if names is not None and token in names:
            return names.index(token)
        value = int(token)
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}-{high}")
        return value

    text = str(text).strip().lower()
    if text == "*":
        return frozenset(range(low, high + 1))
    chosen: set[int] = set()
    try:
        for part in text.split(","):
            if "-" in part:
                start, end = (one(bound) for bound in part.split("-", 1))
                if end < start:
                    raise ValueError(f"range {part!r} runs backwards")
                chosen.update(range(start, end + 1))
            else:
                chosen.add(one(part))
    except ValueError as exc:
        allowed = "mon..sun" if names else f"{low}..{high}"
        raise ValueError(
            f"invalid {text!r} ({exc}); use '*', lists and ranges of {allowed}"
        ) from None
    return frozenset(chosen)


class WindowConfig(_Strict):
    """When scheduled rotations may run (UTC): cron-style days and hours, both inclusive."""

    days: str = "*"
    hours: str = "*"

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        _cron_field(value, _DAYS, 0, 6)
        return value

    @field_validator("hours", mode="before")
    @classmethod
    def _hours(cls, value: str | int) -> str:
        _cron_field(value, None, 0, 23)
        return str(value)

    def is_open(self, when: datetime) -> bool:
        utc = when.astimezone(UTC)
        return utc.weekday() in _cron_field(self.days, _DAYS, 0, 6) and utc.hour in _cron_field(
            self.hours, None, 0, 23
        )


class PolicyConfig(_Strict):
    max_age: Duration = timedelta(days=90)
    warn_age: Duration | None = None
    grace: Duration = timedelta(days=7)
    window: WindowConfig | None = None

    @model_validator(mode="after")
    def _ages_in_order(self) -> PolicyConfig:
        if self.max_age <= timedelta(0):
            raise ValueError("max_age must be longer than zero")
        if self.warn_age is not None and self.warn_age > self.max_age:
            raise ValueError(
                f"warn_age ({format_duration(self.warn_age)}) is longer than max_age "
                f"({format_duration(self.max_age)})"
            )
        return self

    @property
    def effective_warn_age(self) -> timedelta:
        """Warn at 80% of max age unless told otherwise."""
        return self.warn_age if self.warn_age is not None else self.max_age * 0.8


class RequestConfig(_Strict):
    """One HTTP request an issuer or probe makes. ``{name}``, ``{id}`` and ``{key}`` in
    the URL and JSON body are filled in (``{key}`` only where a key is being checked)."""

    url: str
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: dict[str, Any] | None = Field(default=None, alias="json")
    expect: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ProbeConfig(RequestConfig):
    """A request that must succeed with the pending key before it is promoted."""

    header: str = "Authorization"  # "Authorization" means "Authorization: Bearer <key>"
    expect: list[int] = Field(default_factory=lambda: [200])


class GeneratedIssuerConfig(_Strict):
    type: Literal["generated"]
    length: int = Field(default=48, ge=16, le=512)
    alphabet: str | None = None
    prefix: str = ""


class HttpIssuerConfig(_Strict):
    type: Literal["http"]
    create: RequestConfig
    verify: RequestConfig | None = None
    revoke: RequestConfig | None = None
    key_path: str = "key"  # where the new key is in the create response (dotted path)
    id_path: str | None = "id"  # where its id is, kept to revoke it later
    admin_key: KeyName | None = None  # a keyvault key holding the admin credential
    admin_header: str = "Authorization"
    key_header: str = "Authorization"  # how verify presents the key being checked
    #: the header that carries a rotation's idempotency key on create (empty: not sent)
    idempotency_header: str = "Idempotency-Key"
    timeout: float = Field(default=10.0, gt=0)


class ManualIssuerConfig(_Strict):
    type: Literal["manual"]


class AnthropicIssuerConfig(_Strict):
    type: Literal["anthropic"]
    admin_key: KeyName  # a keyvault key holding an Anthropic Admin API key
    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    timeout: float = Field(default=10.0, gt=0)


BUILTIN_ISSUERS: dict[str, type[_Strict]] = {
    "generated": GeneratedIssuerConfig,
    "http": HttpIssuerConfig,
    "manual": ManualIssuerConfig,
    "anthropic": AnthropicIssuerConfig,
}


class IssuerConfig(BaseModel):
    """``[issuers.<name>]``: a built-in type with its options checked here, or a
    third-party type (``keyvault.issuers`` entry point) whose options it checks itself."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str

    @model_validator(mode="after")
    def _builtin_options(self) -> IssuerConfig:
        model = BUILTIN_ISSUERS.get(self.type)
        if model is not None:
            model.model_validate(self.model_dump(by_alias=True))
        return self

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(by_alias=True).items() if k != "type"}

    def builtin(self) -> Any:
        model = BUILTIN_ISSUERS.get(self.type)
        return None if model is None else model.model_validate(self.model_dump(by_alias=True))


class KeyConfig(_Strict):
    provider: str | None = None
    policy: str = "default"
    issuer: str = "generated"
    environment: str | None = None
    probe: ProbeConfig | None = None


class ClientConfig(_Strict):
    """Defaults for the thin client's key cache; also bound the shortest safe grace."""

    cache_ttl: Duration = timedelta(minutes=5)
    max_stale: Duration = timedelta(hours=1)


class ProxyConfig(_Strict):
    """``[proxy.<name>]``: a local reverse proxy that adds key ``key`` to every request."""

    key: KeyName
    upstream: str
    listen: str = "127.0.0.1:8788"
    header: str = "x-api-key"  # or "Authorization" (Bearer)
    #: a keyvault key the app must present (in ``header``) to use the proxy; required to
    #: listen anywhere but loopback, where anyone who reaches the port would spend the key
    inbound_token: KeyName | None = None

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"upstream {value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen {value!r} is not HOST:PORT (port 0..65535)")
        return value


class AccessLogConfig(_Strict):
    """``[access_log]``: a local chained log of value reads for Vault and AWS providers
    (the file store keeps its own, inside the store)."""

    path: Path | None = None
    #: a variable holding base64 of 32+ random bytes, the log's MAC key
    mac_key_env: str = "KEYVAULT_ACCESS_LOG_KEY"


class NotifyConfig(_Strict):
    webhook: str | None = None
    timeout: float = Field(default=5.0, gt=0)
    #: a keyvault key whose value signs every delivery (HMAC-SHA256 over timestamp and body)
    signing_key: KeyName | None = None
    retries: int = Field(default=3, ge=0, le=10)  # after a failure or a 5xx, with backoff
    backoff: Duration = timedelta(seconds=1)  # doubled after each retry


class ServiceConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=1, le=65535)
    interval: Duration = timedelta(hours=1)

    @field_validator("interval")
    @classmethod
    def _sane_interval(cls, value: timedelta) -> timedelta:
        return check_interval(value)

    #: keys a sweep advances at once (reads and issuer calls overlap; writes stay paced)
    sweep_concurrency: int = Field(default=4, ge=1, le=64)
    #: how long a rotation's claim (recorded before its issuer is asked) keeps other runners
    #: away; a crashed runner's rotation is resumed by the next run after this
    claim_lease: Duration = timedelta(minutes=10)


#: sweeps closer than this would hammer the backends for nothing: keys age in days
MIN_SWEEP_INTERVAL = timedelta(seconds=30)


def check_interval(value: timedelta) -> timedelta:
    if value < MIN_SWEEP_INTERVAL:
        raise ValueError(
            f"a sweep interval of {format_duration(value)} is too short: at least "
            f"{format_duration(MIN_SWEEP_INTERVAL)} (keys age in days; 1h is the default)"
        )
    return value


#: how much longer than the client cache TTL a grace period must be, so that every client
#: has refetched the new key (and had time to retry through an outage) before the old one
#: is revoked
GRACE_MARGIN = timedelta(hours=1)


class Config(_Strict):
    default_provider: str | None = None
    environment: str | None = None
    #: a process with an environment refuses keys that carry no environment label at all
    require_environment: bool = False
    client: ClientConfig = Field(default_factory=ClientConfig)
    issuers: dict[str, IssuerConfig] = Field(default_factory=dict)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    policies: dict[str, PolicyConfig] = Field(default_factory=dict, validate_default=True)
    keys: dict[KeyName, KeyConfig] = Field(default_factory=dict)
    proxy: dict[str, ProxyConfig] = Field(default_factory=dict)
    access_log: AccessLogConfig = Field(default_factory=AccessLogConfig)

    #: the file this was loaded from (not a TOML field)
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("policies")
    @classmethod
    def _always_a_default_policy(cls, value: dict[str, PolicyConfig]) -> dict[str, PolicyConfig]:
        return value if "default" in value else {**value, "default": PolicyConfig()}

    @model_validator(mode="after")
    def _references_resolve(self) -> Config:
        if self.default_provider is not None and self.default_provider not in self.providers:
            raise ValueError(
                f"default_provider {self.default_provider!r} is not a table under [providers]"
            )
        if not self.providers:
            raise ValueError(
                "no providers are configured: add a [providers.NAME] table (`keyvault init` "
                "writes one for the embedded store)"
            )
        if self.default_provider is None and len(self.providers) > 1:
            raise ValueError("several providers are configured: set default_provider")
        shortest = self.client.cache_ttl + GRACE_MARGIN
        for name, policy in self.policies.items():
            if policy.grace <= shortest:
                raise ValueError(
                    f"[policies.{name}] grace ({format_duration(policy.grace)}) must be longer "
                    f"than the client cache TTL ({format_duration(self.client.cache_ttl)}) plus "
                    f"{format_duration(GRACE_MARGIN)}, or clients may still hold the old key "
                    "when it is revoked"
                )
        for name, key in self.keys.items():
            if key.issuer not in self.issuers and key.issuer not in ("generated", "manual"):
                raise ValueError(
                    f'[keys."{name}"] issuer {key.issuer!r} is not a table under [issuers] '
                    "(built in without one: generated, manual)"
                )
            if key.provider is not None and key.provider not in self.providers:
                raise ValueError(
                    f'[keys."{name}"] provider {key.provider!r} is not a table under [providers]'
                )
            if key.policy not in self.policies:
                raise ValueError(
                    f'[keys."{name}"] policy {key.policy!r} is not a table under [policies]'
                )
        return self

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

    def key(self, key_name: str) -> KeyConfig:
        """The key's config; keys the config does not name get the defaults."""
        return self.keys.get(key_name) or KeyConfig()

    def policy_for(self, key_name: str) -> PolicyConfig:
        return self.policies[self.key(key_name).policy]

    def issuer_config(self, name: str) -> IssuerConfig:
        if name in self.issuers:
            return self.issuers[name]
        if name in ("generated", "manual"):
            return IssuerConfig(type=name)
        raise ConfigError(f"{self.label}: no issuer named {name!r}")

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


def load_config(path: Path) -> Config:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    return parse_config(data, source=path)


def parse_config(data: dict[str, Any], *, source: Path | None = None) -> Config:
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _describe(exc: ValidationError, source: Path | None) -> str:
    where = str(source) if source is not None else "config"
    lines = []
    for error in exc.errors():
        lines.append(f"{where}: {_location(error['loc'])}{_message(error)}")
    return "\n".join(lines)


def _message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling)"
    if error["type"] == "union_tag_invalid":
        message = f"unknown provider type; expected one of {', '.join(PROVIDER_TYPES)}"
    return message


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(part) for part in loc]
    if not parts:
        return ""
    if parts[0] in ("providers", "policies", "keys", "issuers") and len(parts) >= 2:
        table_name = parts[1]
        if not re.fullmatch(r"[A-Za-z0-9_-]+", table_name):
            table_name = f'"{table_name}"'
        rest = parts[2:]
        if parts[0] == "providers" and rest and rest[0] in PROVIDER_TYPES:
            rest = rest[1:]
        table = f"[{parts[0]}.{table_name}]"
        if parts[0] == "keys" and rest and rest[0] == "[key]":
            return f"{table} (the key name): "
        return f"{table} {'.'.join(rest)}: " if rest else f"{table}: "
    return f"{'.'.join(parts)}: "
