"""The thin client: apps ask for an HTTP client and it always sends the current key."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import msgspec

from keyvault.client.auth import HeaderStyle, KeyAuth, KeySource
from keyvault.client.cache import DEFAULT_MAX_STALE, DEFAULT_TTL, KeyCache
from keyvault.client.http import AsyncKeyvaultClient, KeyvaultClient, Resilience
from keyvault.client.limiter import KeyLimiter, LimitSettings
from keyvault.client.metrics import ClientMetrics
from keyvault.client.resilience import CircuitBreaker, RetryPolicy
from keyvault.errors import EnvironmentMismatch
from keyvault.model import KeySet

if TYPE_CHECKING:
    from keyvault.client.responses import ResponseCache

__all__ = [
    "AsyncKeyvaultClient",
    "CacheSettings",
    "CircuitBreaker",
    "ClientSettings",
    "HeaderStyle",
    "KeyAuth",
    "KeyCache",
    "KeyLimiter",
    "KeyvaultClient",
    "LimitSettings",
    "RetryPolicy",
    "check_environment",
    "process_environment",
]

ENV_VAR = "KEYVAULT_ENV"


class CacheSettings(msgspec.Struct, frozen=True):
    ttl: float = DEFAULT_TTL
    max_stale: float = DEFAULT_MAX_STALE
    jitter: float = 0.1


class ClientSettings(msgspec.Struct, frozen=True):
    """What a client does around each request; every field has a production default.
    The limit on requests in flight is the key's (:class:`LimitSettings`), not a client's."""

    header: str = "Authorization"
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0


def process_environment(configured: str | None) -> str | None:
    """The environment this process runs as: ``$KEYVAULT_ENV``, else the config's."""
    return os.environ.get(ENV_VAR) or configured


def check_environment(
    key_name: str,
    key_env: str | None,
    process_env: str | None,
    *,
    require_label: bool = False,
) -> None:
    """Refuse a prod key in a dev process and the other way round, before any value is
    handed out.

    Both labels must be known to disagree; an unlabelled process is not judged, and an
    unlabelled key is refused only when ``require_label`` (the config's
    ``require_environment``) says a process with an environment must know every key's.
    """
    if process_env and not key_env and require_label:
        raise EnvironmentMismatch(
            f"key {key_name!r} carries no environment label and this process runs as "
            f"{process_env!r} with require_environment = true; label the key "
            '(`[keys."NAME"] environment` or `put --environment`)'
        )
    if key_env and process_env and key_env != process_env:
        raise EnvironmentMismatch(
            f"key {key_name!r} is labelled {key_env!r} but this process runs as "
            f"{process_env!r} (${ENV_VAR} or the config's `environment`); refusing to send it"
        )


def resilience_for(
    name: str,
    settings: ClientSettings,
    limiter: KeyLimiter,
    responses: ResponseCache | None = None,
    **options: Any,
) -> Resilience:
    metrics = ClientMetrics(name)
    breaker = CircuitBreaker(
        name,
        threshold=settings.breaker_threshold,
        cooldown=settings.breaker_cooldown,
        on_change=metrics.breaker,
    )
    return Resilience(settings.retry, breaker, metrics, limiter, responses=responses, **options)


def build_client(
    cache: KeyCache,
    limiter: KeyLimiter,
    name: str,
    *,
    settings: ClientSettings,
    asynchronous: bool = False,
    responses: ResponseCache | None = None,
    **httpx_options: Any,
) -> KeyvaultClient | AsyncKeyvaultClient:
    """A client on the key's process-wide ``cache`` (which applies the guard) and
    ``limiter`` (shared by every client of the key)."""
    keys = KeySource(cache, on_refresh=refresh_logger(name))
    keys.cache.get()  # fail now (not found, wrong environment) rather than on first request
    auth = KeyAuth(keys, HeaderStyle.for_header(settings.header), name)
    resilience = resilience_for(name, settings, limiter, responses)
    cls = AsyncKeyvaultClient if asynchronous else KeyvaultClient
    return cls(resilience=resilience, auth=auth, **httpx_options)


def refresh_logger(name: str) -> Any:
    metrics = ClientMetrics(name)

    def on_refresh(keyset: KeySet) -> None:
        metrics.refresh(keyset.primary.fingerprint)

    return on_refresh
