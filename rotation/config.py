"""The rotation service's tables of the one config file: policies and their windows, issuers,
probes, notifications, the service itself.

:class:`RotationConfig` is the library's :class:`~keyvault.config.Config` plus these tables,
validated whole on load; every ``keyvault`` command loads the file with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from msgspec import Meta, field

from keyvault.config import (
    Config,
    KeyConfig,
    parse_as,
    read_toml,
)
from keyvault.durations import format_duration
from keyvault.errors import ConfigError
from keyvault.schema import Duration, KeyName, Problems, Strict, convert

if TYPE_CHECKING:
    from keyvault.registry import KeyVault

Positive = Annotated[float, Meta(gt=0)]

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


class WindowConfig(Strict, frozen=True):
    """When scheduled rotations may run (UTC): cron-style days and hours, both inclusive."""

    days: str = "*"
    hours: str | int = "*"

    def __post_init__(self) -> None:
        try:
            _cron_field(self.days, _DAYS, 0, 6)
        except ValueError as exc:
            raise ValueError(f"days: {exc}") from None
        try:
            _cron_field(self.hours, None, 0, 23)
        except ValueError as exc:
            raise ValueError(f"hours: {exc}") from None

    def is_open(self, when: datetime) -> bool:
        utc = when.astimezone(UTC)
        return utc.weekday() in _cron_field(self.days, _DAYS, 0, 6) and utc.hour in _cron_field(
            self.hours, None, 0, 23
        )


class PolicyConfig(Strict, frozen=True):
    max_age: Duration = Duration(days=90)
    warn_age: Duration | None = None
    grace: Duration = Duration(days=7)
    window: WindowConfig | None = None

    def __post_init__(self) -> None:
        if self.max_age <= timedelta(0):
            raise ValueError("max_age must be longer than zero")
        if self.warn_age is not None and self.warn_age > self.max_age:
            raise ValueError(
                f"warn_age ({format_duration(self.warn_age)}) is longer than max_age "
                f"({format_duration(self.max_age)})"
            )

    @property
    def effective_warn_age(self) -> timedelta:
        """Warn at 80% of max age unless told otherwise."""
        return self.warn_age if self.warn_age is not None else self.max_age * 0.8


def _default_expect() -> list[int]:
    return [200, 201, 202, 204]


class RequestConfig(Strict, frozen=True):
    """One HTTP request an issuer or probe makes. ``{name}``, ``{id}`` and ``{key}`` in
    the URL and JSON body are filled in (``{key}`` only where a key is being checked)."""

    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    json_body: dict[str, Any] | None = field(default=None, name="json")
    expect: list[int] = field(default_factory=_default_expect)


class ProbeConfig(RequestConfig, frozen=True):
    """A request that must succeed with the pending key before it is promoted."""

    header: str = "Authorization"  # "Authorization" means "Authorization: Bearer <key>"
    expect: list[int] = field(default_factory=lambda: [200])


class GeneratedIssuerConfig(Strict, frozen=True, tag_field="type", tag="generated"):
    length: Annotated[int, Meta(ge=16, le=512)] = 48
    alphabet: str | None = None
    prefix: str = ""


class HttpIssuerConfig(Strict, frozen=True, tag_field="type", tag="http"):
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
    timeout: Positive = 10.0


class ManualIssuerConfig(Strict, frozen=True, tag_field="type", tag="manual"):
    pass


class AnthropicIssuerConfig(Strict, frozen=True, tag_field="type", tag="anthropic"):
    admin_key: KeyName  # a keyvault key holding an Anthropic Admin API key
    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    timeout: Positive = 10.0


BuiltinIssuerConfig = (
    GeneratedIssuerConfig | HttpIssuerConfig | ManualIssuerConfig | AnthropicIssuerConfig
)
BUILTIN_ISSUERS: dict[str, type[Strict]] = {
    "generated": GeneratedIssuerConfig,
    "http": HttpIssuerConfig,
    "manual": ManualIssuerConfig,
    "anthropic": AnthropicIssuerConfig,
}


class IssuerConfig(Strict, frozen=True):
    """``[issuers.<name>]``: a built-in type with its options checked here, or a
    third-party type (``keyvault.issuers`` entry point) whose options it checks itself."""

    type: str
    #: the table as written, less ``type``: what a third-party factory receives
    options: dict[str, Any] = field(default_factory=dict)
    #: the checked options of a built-in type (None for a third-party one)
    builtin: BuiltinIssuerConfig | None = None

    @classmethod
    def from_table(cls, table: Any) -> IssuerConfig:
        if not isinstance(table, dict) or not isinstance(table.get("type"), str):
            raise ValueError("type is missing: set a built-in issuer type or a plugin's name")
        kind = BUILTIN_ISSUERS.get(table["type"])
        builtin = None if kind is None else convert(table, kind)
        options = {name: value for name, value in table.items() if name != "type"}
        return cls(type=table["type"], options=options, builtin=builtin)  # type: ignore[arg-type]


class RotationKeyConfig(KeyConfig, frozen=True):
    probe: ProbeConfig | None = None  # type: ignore[assignment]


class NotifyConfig(Strict, frozen=True):
    webhook: str | None = None
    timeout: Positive = 5.0
    #: a keyvault key whose value signs every delivery (HMAC-SHA256 over timestamp and body)
    signing_key: KeyName | None = None
    retries: Annotated[int, Meta(ge=0, le=10)] = 3  # after a failure or a 5xx, with backoff
    backoff: Duration = Duration(seconds=1)  # doubled after each retry


#: sweeps closer than this would hammer the backends for nothing: keys age in days
MIN_SWEEP_INTERVAL = timedelta(seconds=30)


def check_interval(value: timedelta) -> timedelta:
    if value < MIN_SWEEP_INTERVAL:
        raise ValueError(
            f"a sweep interval of {format_duration(value)} is too short: at least "
            f"{format_duration(MIN_SWEEP_INTERVAL)} (keys age in days; 1h is the default)"
        )
    return value


class ServiceConfig(Strict, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 9464
    interval: Duration = Duration(hours=1)
    #: keys a sweep advances at once (reads and issuer calls overlap; writes stay paced)
    sweep_concurrency: Annotated[int, Meta(ge=1, le=64)] = 4
    #: how long a rotation's claim (recorded before its issuer is asked) keeps other runners
    #: away; a crashed runner's rotation is resumed by the next run after this
    claim_lease: Duration = Duration(minutes=10)

    def __post_init__(self) -> None:
        try:
            check_interval(self.interval)
        except ValueError as exc:
            raise ValueError(f"interval: {exc}") from None


#: how much longer than the client cache TTL a grace period must be, so that every client
#: has refetched the new key (and had time to retry through an outage) before the old one
#: is revoked
GRACE_MARGIN = timedelta(hours=1)

#: issuers that need no table under [issuers]
BUILT_IN_WITHOUT_TABLE = ("generated", "manual")


class RotationConfig(Config, frozen=True):
    policies: dict[str, PolicyConfig] = field(default_factory=dict)
    issuers: dict[str, IssuerConfig] = field(default_factory=dict)
    keys: dict[str, RotationKeyConfig] = field(default_factory=dict)  # type: ignore[assignment]
    notify: NotifyConfig = field(default_factory=NotifyConfig)  # type: ignore[assignment]
    service: ServiceConfig = field(default_factory=ServiceConfig)  # type: ignore[assignment]

    NAMED_TABLES: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        **Config.NAMED_TABLES,
        "keys": partial(convert, kind=RotationKeyConfig),
        "policies": partial(convert, kind=PolicyConfig),
        "issuers": IssuerConfig.from_table,
    }

    def __post_init__(self) -> None:
        if "default" not in self.policies:
            self.policies["default"] = PolicyConfig()

    def check(self, problems: Problems) -> None:
        super().check(problems)
        shortest = self.client.cache_ttl + GRACE_MARGIN
        for name, policy in self.policies.items():
            if policy.grace <= shortest:
                problems.add(
                    f"[policies.{name}]",
                    f" grace ({format_duration(policy.grace)}) must be longer than the client "
                    f"cache TTL ({format_duration(self.client.cache_ttl)}) plus "
                    f"{format_duration(GRACE_MARGIN)}, or clients may still hold the old key "
                    "when it is revoked",
                )
        for name, key in self.keys.items():
            if key.issuer not in self.issuers and key.issuer not in BUILT_IN_WITHOUT_TABLE:
                problems.add(
                    f'[keys."{name}"]',
                    f" issuer {key.issuer!r} is not a table under [issuers] "
                    f"(built in without one: {', '.join(BUILT_IN_WITHOUT_TABLE)})",
                )
            if key.policy not in self.policies:
                problems.add(
                    f'[keys."{name}"]',
                    f" policy {key.policy!r} is not a table under [policies]",
                )

    def key(self, key_name: str) -> RotationKeyConfig:
        """The key's config; keys the config does not name get the defaults."""
        return self.keys.get(key_name) or RotationKeyConfig()

    def policy_for(self, key_name: str) -> PolicyConfig:
        return self.policies[self.key(key_name).policy]

    def issuer_config(self, name: str) -> IssuerConfig:
        if name in self.issuers:
            return self.issuers[name]
        if name in BUILT_IN_WITHOUT_TABLE:
            return IssuerConfig.from_table({"type": name})
        raise ConfigError(f"{self.label}: no issuer named {name!r}")


def load_config(path: Path) -> RotationConfig:
    return parse_config(read_toml(path), source=path)


def parse_config(data: dict[str, Any], *, source: Path | None = None) -> RotationConfig:
    return parse_as(RotationConfig, data, source=source)


def rotation_config(kv: KeyVault) -> RotationConfig:
    """The service's view of ``kv``'s config; a library-only config is a programming error
    (``keyvault.load()`` does not read the service's tables)."""
    if not isinstance(kv.config, RotationConfig):
        raise TypeError(
            "this KeyVault was built from the library's config: load the file with "
            "rotation.config.load_config to use the rotation service"
        )
    return kv.config
