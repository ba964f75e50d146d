"""``KeyVault``: the providers one config names, built on first use, and the routing of a
key name to its provider. It is what ``keyvault.load()`` returns and what the CLI and the
rotation service work through."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import msgspec

from keyvault.access import ChainedFile, reading
from keyvault.config import Config, find_config, load_config
from keyvault.errors import ConfigError, KeyNotFoundError, KeyvaultError
from keyvault.extras import missing_extra
from keyvault.model import (
    BrokenKey,
    KeyInfo,
    KeySet,
    check_ref,
    check_value,
    utcnow,
    validate_name,
)
from keyvault.providers import KeyProvider, build_provider
from keyvault.secret import SecretValue

if TYPE_CHECKING:
    from keyvault.client import CacheSettings, ClientSettings
    from keyvault.client.cache import KeyCache
    from keyvault.client.http import AsyncKeyvaultClient, KeyvaultClient
    from keyvault.client.limiter import KeyLimiter, LimitSettings
    from keyvault.client.responses import ResponseCache


#: kv.client's read timeout when [client] timeout is not set
DEFAULT_READ_TIMEOUT = 30.0


class ProviderFailure(msgspec.Struct, frozen=True):
    """A provider that could not be read while listing; the others still are."""

    provider: str
    error: KeyvaultError


class KeyVault:
    def __init__(self, config: Config, *, providers: Mapping[str, KeyProvider] | None = None):
        self.config = config
        self._providers: dict[str, KeyProvider] = dict(providers or {})
        self._caches: dict[tuple[str, str], KeyCache] = {}
        self._caches_by_name: dict[str, KeyCache] = {}
        self._limiters: dict[str, KeyLimiter] = {}
        self._responses: ResponseCache | None = None
        self._lock = threading.RLock()
        self._chained_file: ChainedFile | None = None

    # -- providers -------------------------------------------------------------------------

    def provider(self, name: str) -> KeyProvider:
        provider = self._providers.get(name)
        if provider is None:
            with self._lock:
                provider = self._providers.get(name)
                if provider is None:
                    provider = build_provider(self.config, name)
                    provider.access_log = self._access_log(provider)
                    self._providers[name] = provider
        return provider

    def _access_log(self, provider: KeyProvider) -> ChainedFile | None:
        """The configured local access log, for providers that keep no log of their own."""
        settings = self.config.access_log
        if settings.path is None or provider.keeps_access_log:
            return None
        if self._chained_file is None:
            encoded = os.environ.get(settings.mac_key_env, "")
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                key = b""
            if len(key) < 32:
                raise ConfigError(
                    f"{self.config.label}: [access_log] needs ${settings.mac_key_env}: base64 of "
                    "32 random bytes (e.g. `openssl rand -base64 32`), the log's MAC key"
                )
            self._chained_file = ChainedFile(
                self.config.resolve_path(settings.path), key, clock=utcnow
            )
        return self._chained_file

    def provider_for(self, key_name: str, override: str | None = None) -> KeyProvider:
        validate_name(key_name)
        if override is not None:
            if override not in self.config.providers and override not in self._providers:
                raise ConfigError(
                    f"no provider named {override!r} (configured: "
                    f"{', '.join(sorted(self.config.providers)) or 'none'})"
                )
            return self.provider(override)
        return self.provider(self.config.provider_for(key_name))

    def provider_names(self) -> list[str]:
        return sorted(set(self.config.providers) | set(self._providers))

    # -- keys ------------------------------------------------------------------------------

    def get_keyset(self, name: str, *, provider: str | None = None) -> KeySet:
        """The key's values, read past every cache; refused by the environment guard like
        every other path that hands out a value."""
        keyset = self.provider_for(name, provider).get_keyset(name)
        self.guard(keyset)
        return keyset

    def guard(self, keyset: KeySet) -> None:
        """The environment guard: EnvironmentMismatch unless this process may hold the key."""
        from keyvault.client import check_environment

        check_environment(
            keyset.name,
            self.environment_of(keyset.name, keyset.environment),
            self.process_environment,
            require_label=self.config.require_environment,
        )

    def describe(self, name: str, *, provider: str | None = None) -> KeyInfo:
        return self.provider_for(name, provider).describe(name)

    def environment_of(self, name: str, stored: str | None) -> str | None:
        """A key's environment label: the config's word wins over the stored one."""
        configured = self.config.keys.get(name)
        if configured is not None and configured.environment is not None:
            return configured.environment
        return stored

    def put(
        self,
        name: str,
        value: SecretValue,
        *,
        provider: str | None = None,
        environment: str | None = None,
        created_at: datetime | None = None,
        ref: str | None = None,
        multiline: bool = False,
    ) -> KeyInfo:
        """Create key ``name`` with ``value`` as its first primary. The value is checked
        first (see :func:`keyvault.model.check_value`); ``ref`` is the issuer's id for it."""
        target = self.provider_for(name, provider)
        check_value(value.reveal(), multiline=multiline)
        if ref is not None:
            check_ref(ref)
        return target.create(
            name,
            value,
            environment=environment or self.environment_of(name, None),
            created_at=created_at,
            ref=ref,
        )

    def list_keys(
        self, *, provider: str | None = None
    ) -> tuple[list[KeyInfo | BrokenKey], list[ProviderFailure]]:
        """Every key of every provider (or one); a provider that fails is reported, not fatal,
        and so is a key whose record cannot be trusted (a :class:`BrokenKey`)."""
        names = [provider] if provider is not None else self.provider_names()
        keys: list[KeyInfo | BrokenKey] = []
        failures: list[ProviderFailure] = []
        for name in names:
            try:
                keys.extend(self.provider(name).list_keys())
            except KeyvaultError as exc:
                failures.append(ProviderFailure(name, exc))
        return keys, failures

    # -- what apps use ---------------------------------------------------------------------

    @property
    def process_environment(self) -> str | None:
        from keyvault.client import process_environment

        return process_environment(self.config.environment)

    def cache(self, name: str, settings: CacheSettings | None = None) -> KeyCache:
        """The process-wide cache of one key (one per provider and key name)."""
        from keyvault.client.cache import KeyCache

        provider = self.provider_for(name)
        slot = (provider.name, name)
        cache = self._caches.get(slot)
        if cache is None:
            with self._lock:
                cache = self._caches.get(slot)
                if cache is None:
                    chosen = settings or self.cache_settings()

                    def fetch() -> KeySet:
                        with reading("client"):
                            keyset = provider.get_keyset(name)
                        self.guard(keyset)
                        return keyset

                    cache = KeyCache(
                        fetch,
                        name=name,
                        ttl=chosen.ttl,
                        max_stale=chosen.max_stale,
                        jitter=chosen.jitter,
                    )
                    self._caches[slot] = cache
                    self._caches_by_name.setdefault(name, cache)
        return cache

    def cache_settings(self) -> CacheSettings:
        """The config's ``[client]`` cache defaults."""
        from keyvault.client import CacheSettings

        return CacheSettings(
            ttl=self.config.client.cache_ttl.total_seconds(),
            max_stale=self.config.client.max_stale.total_seconds(),
        )

    def keyset(self, name: str) -> KeySet:
        """The cached keyset of ``name``: what a client would send now."""
        cache = self._caches_by_name.get(name)  # hot path: no validation or routing
        return (cache or self.cache(name)).get()

    def limit_settings(self) -> LimitSettings:
        """The config's ``[client]`` limits on a key's requests."""
        from keyvault.client.limiter import LimitSettings

        client = self.config.client
        return LimitSettings(
            max_in_flight=client.max_in_flight,
            max_queue=client.max_queue,
            queue_timeout=client.queue_timeout.total_seconds(),
        )

    def limiter(self, name: str, settings: LimitSettings | None = None) -> KeyLimiter:
        """The one limiter of key ``name`` in this process: every client of the key (sync,
        async, the Anthropic SDK's) takes its slots here. Asking again with different
        settings is an error: one key has one limit."""
        from keyvault.client.limiter import KeyLimiter
        from keyvault.client.metrics import ClientMetrics

        with self._lock:
            limiter = self._limiters.get(name)
            if limiter is None:
                limiter = KeyLimiter(
                    name,
                    settings or self.limit_settings(),
                    on_depth=ClientMetrics(name).queue_depth,
                )
                self._limiters[name] = limiter
            elif settings is not None and settings != limiter.settings:
                raise ConfigError(
                    f"key {name!r} already has clients limited by {limiter.settings}; one "
                    f"key has one limit per process, so {settings} cannot apply to another"
                )
        return limiter

    def response_cache(self) -> ResponseCache | None:
        """The ``[client.response_cache]`` of this process (None when not configured):
        one store and one set of in-flight requests for every key's clients."""
        settings = self.config.client.response_cache
        if settings is None:
            return None
        with self._lock:
            if self._responses is None:
                self._responses = self._build_response_cache(settings)
        return self._responses

    def _build_response_cache(self, settings: Any) -> ResponseCache:
        from keyvault.client.responses import (
            Flights,
            MemoryStore,
            RedisStore,
            ResponseCache,
            Store,
        )

        ttl = settings.ttl.total_seconds()
        store: Store
        if settings.backend == "redis":
            try:
                import redis
            except ImportError as exc:
                if exc.name != "redis":
                    raise
                raise missing_extra(
                    f'{self.config.label}: [client.response_cache] backend = "redis"', "redis"
                ) from None
            seal_key = settings.seal_key
            try:  # a missing seal key fails here, naming what it is for
                self.keyset(seal_key)
            except KeyNotFoundError as exc:
                raise KeyNotFoundError(
                    f"{self.config.label}: [client.response_cache] seal_key: {exc} (create it "
                    f"with `keyvault put {seal_key} --generate`)"
                ) from None
            client = redis.Redis.from_url(
                settings.url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
            store = RedisStore(client, ttl, lambda: self.keyset(seal_key))
        else:
            store = MemoryStore(ttl, settings.max_entries)
        return ResponseCache(store, tuple(settings.paths), Flights(), tuple(settings.vary))

    def client_settings(self, header: str = "Authorization") -> ClientSettings:
        """The config's ``[client]`` retry policy, for a client sending in ``header``."""
        from keyvault.client import ClientSettings, RetryPolicy

        retry = self.config.client.retry
        return ClientSettings(
            header=header,
            retry=RetryPolicy(
                max_attempts=retry.attempts,
                backoff=retry.backoff.total_seconds(),
                statuses=frozenset(retry.statuses),
                all_methods=retry.methods == "all",
            ),
        )

    def _timeout(self, read_default: float | None) -> Any:
        """``[client]`` timeouts as an httpx timeout; ``read_default`` where unset."""
        import httpx

        client = self.config.client
        read = client.timeout.total_seconds() if client.timeout is not None else read_default
        return httpx.Timeout(read, connect=client.connect_timeout.total_seconds())

    def client(
        self,
        name: str,
        *,
        header: str = "Authorization",
        settings: ClientSettings | None = None,
        cache: CacheSettings | None = None,
        key_limits: LimitSettings | None = None,
        **httpx_options: Any,
    ) -> KeyvaultClient:
        """A ready ``httpx.Client`` that always sends key ``name``'s current primary in
        ``header`` (``Authorization: Bearer`` by default). ``key_limits`` sets the key's one
        limiter (the config's ``[client]`` limits otherwise). Every other httpx option passes
        through (``base_url``, ``proxy``, ``verify``, ``limits`` — httpx's connection pool —,
        ``event_hooks``, ``transport``...)."""
        client = self._build(name, header, settings, cache, key_limits, False, httpx_options)
        return cast("KeyvaultClient", client)

    def async_client(
        self,
        name: str,
        *,
        header: str = "Authorization",
        settings: ClientSettings | None = None,
        cache: CacheSettings | None = None,
        key_limits: LimitSettings | None = None,
        **httpx_options: Any,
    ) -> AsyncKeyvaultClient:
        """The ``httpx.AsyncClient`` twin of :meth:`client`; it shares the key's limiter
        with every sync client, and works from any event loop."""
        client = self._build(name, header, settings, cache, key_limits, True, httpx_options)
        return cast("AsyncKeyvaultClient", client)

    def _build(
        self,
        name: str,
        header: str,
        settings: ClientSettings | None,
        cache: CacheSettings | None,
        key_limits: LimitSettings | None,
        asynchronous: bool,
        httpx_options: dict[str, Any],
    ) -> Any:
        from keyvault.client import build_client

        httpx_options.setdefault("timeout", self._timeout(DEFAULT_READ_TIMEOUT))
        return build_client(
            self.cache(name, cache),
            self.limiter(name, key_limits),
            name,
            settings=settings or self.client_settings(header),
            asynchronous=asynchronous,
            responses=self.response_cache(),
            **httpx_options,
        )

    def anthropic(self, name: str, **options: Any) -> Any:
        """An ``anthropic.Anthropic`` whose every request carries key ``name``'s current
        primary (the ``anthropic`` extra)."""
        return self._anthropic(name, False, options)

    def async_anthropic(self, name: str, **options: Any) -> Any:
        """The ``anthropic.AsyncAnthropic`` twin of :meth:`anthropic`: the same auth flow,
        breaker, response cache and the key's one limiter, from any event loop."""
        return self._anthropic(name, True, options)

    def _anthropic(self, name: str, asynchronous: bool, options: dict[str, Any]) -> Any:
        what = "kv.async_anthropic()" if asynchronous else "kv.anthropic()"
        try:
            from keyvault.client.anthropic import build_anthropic
        except ImportError as exc:
            if exc.name not in ("anthropic", "httpx2"):
                raise
            raise missing_extra(what, "anthropic") from None
        if self.config.client.timeout is not None:  # else the SDK's own, sized for long answers
            options.setdefault("timeout", self.config.client.timeout.total_seconds())
        return build_anthropic(
            self.cache(name),
            self.limiter(name),
            name,
            asynchronous=asynchronous,
            responses=self.response_cache(),
            **options,
        )

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()

    def __enter__(self) -> KeyVault:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def load(path: str | Path | None = None) -> KeyVault:
    """The config file as the CLI finds it: ``path``, ``$KEYVAULT_CONFIG``, ``./keyvault.toml``."""
    found = find_config(Path(path) if path is not None else None)
    return KeyVault(load_config(found))
