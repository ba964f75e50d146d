"""The thin client against a loopback vendor API, with keys in a real file store."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from typing import Any

import httpx
import pytest

from keyvault.client import CacheSettings, ClientSettings, check_environment
from keyvault.client.anthropic import PLACEHOLDER_KEY
from keyvault.client.cache import KeyCache
from keyvault.client.resilience import CircuitBreaker, RetryPolicy, retry_after_seconds
from keyvault.config import parse_config
from keyvault.errors import (
    BackendUnavailableError,
    CircuitOpenError,
    EnvironmentMismatch,
)
from keyvault.model import KeySet, KeyVersion
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue, fingerprint
from tests.fixtures_client import CountingProvider, rotate
from tests.leaks import assert_not_leaked, canary
from tests.vendor_api import VendorAPI

Mode = str
MODES = ["sync", "async"]


def make_client(kv: KeyVault, mode: Mode, name: str, **kwargs: Any) -> Any:
    return (kv.client if mode == "sync" else kv.async_client)(name, **kwargs)


def call(client: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
    if isinstance(client, httpx.AsyncClient):

        async def run() -> httpx.Response:
            async with client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(run())
    return client.request(method, url, **kwargs)


def no_sleep_client(kv: KeyVault, mode: Mode, name: str, delays: list[float], **kwargs: Any) -> Any:
    client = make_client(kv, mode, name, **kwargs)
    client.resilience.sleep = delays.append

    async def record(delay: float) -> None:
        delays.append(delay)

    client.resilience.async_sleep = record
    return client


# -- the auth flow ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_sends_the_primary_in_the_configured_header(
    kv: KeyVault, store: CountingProvider, vendor: VendorAPI, mode: Mode
) -> None:
    raw = canary()
    store.create("api/key", SecretValue(raw))
    vendor.state.add_key(raw)
    client = make_client(kv, mode, "api/key", base_url=vendor.url, header="x-api-key")
    assert call(client, "GET", "/v1/models").status_code == 200
    assert vendor.state.seen == [fingerprint(raw)]


@pytest.mark.parametrize("mode", MODES)
def test_key_revoked_after_caching_is_refreshed(
    kv: KeyVault, store: CountingProvider, vendor: VendorAPI, mode: Mode
) -> None:
    old, new = canary("old"), canary("new")
    store.create("api/key", SecretValue(old))
    vendor.state.add_key(old)
    client = make_client(kv, mode, "api/key", base_url=vendor.url)
    if mode == "sync":
        assert call(client, "GET", "/v1/models").status_code == 200
    # rotation: the backend gets the new key, the vendor revokes the old one
    rotate(store, "api/key", new)
    vendor.state.add_key(new)
    vendor.state.revoke(old)
    response = call(client, "GET", "/v1/models")
    assert response.status_code == 200
    assert vendor.state.seen[-2:] == [fingerprint(old), fingerprint(new)]


@pytest.mark.parametrize("mode", MODES)
def test_primary_revoked_before_backend_update_uses_secondary(
    kv: KeyVault, store: CountingProvider, vendor: VendorAPI, mode: Mode
) -> None:
    old, new = canary("old"), canary("new")
    store.create("api/key", SecretValue(old))
    rotate(store, "api/key", new)  # backend: primary new, secondary old
    vendor.state.add_key(old)  # the vendor has not activated the new key yet
    client = make_client(kv, mode, "api/key", base_url=vendor.url)
    assert call(client, "GET", "/v1/models").status_code == 200
    assert vendor.state.seen == [fingerprint(new), fingerprint(old)]


@pytest.mark.parametrize("mode", MODES)
def test_never_more_than_primary_refreshed_and_secondary(
    kv: KeyVault, store: CountingProvider, vendor: VendorAPI, mode: Mode
) -> None:
    store.create("api/key", SecretValue(canary()))
    rotate(store, "api/key", canary())
    client = make_client(kv, mode, "api/key", base_url=vendor.url)
    assert call(client, "GET", "/v1/models").status_code == 401
    assert vendor.state.requests == 2  # primary (refetch gave the same), then secondary


# -- retries ------------------------------------------------------------


@pytest.fixture
def valid_key(store: CountingProvider, vendor: VendorAPI) -> str:
    raw = canary()
    store.create("api/key", SecretValue(raw))
    vendor.state.add_key(raw)
    return raw


@pytest.mark.parametrize("mode", MODES)
def test_429_honours_retry_after(
    kv: KeyVault, vendor: VendorAPI, valid_key: str, mode: Mode
) -> None:
    vendor.state.script.append((429, {"Retry-After": "1"}))
    delays: list[float] = []
    client = no_sleep_client(kv, mode, "api/key", delays, base_url=vendor.url)
    assert call(client, "POST", "/v1/messages", json={}).status_code == 200
    assert delays == [1.0]
    assert vendor.state.requests == 2


def test_429_waits_about_retry_after_for_real(
    kv: KeyVault, vendor: VendorAPI, valid_key: str
) -> None:
    """The real sleep is used by default (measured, not asserted beyond 'it waited')."""
    vendor.state.script.append((429, {"Retry-After": "1"}))
    client = kv.client("api/key", base_url=vendor.url)
    waited: list[float] = []
    real_sleep = client.resilience.sleep

    def spy(seconds: float) -> None:
        waited.append(seconds)
        real_sleep(seconds)

    client.resilience.sleep = spy
    assert client.get("/v1/models").status_code == 200
    assert waited == [1.0]


@pytest.mark.parametrize("mode", MODES)
def test_503_is_retried_with_backoff(
    kv: KeyVault, vendor: VendorAPI, valid_key: str, mode: Mode
) -> None:
    vendor.state.script.extend([(503, {}), (503, {})])
    delays: list[float] = []
    client = no_sleep_client(kv, mode, "api/key", delays, base_url=vendor.url)
    assert call(client, "GET", "/v1/models").status_code == 200
    assert len(delays) == 2 and all(0 <= d <= 8 for d in delays)


@pytest.mark.parametrize("mode", MODES)
def test_post_is_not_retried_on_502(
    kv: KeyVault, vendor: VendorAPI, valid_key: str, mode: Mode
) -> None:
    vendor.state.script.append((502, {}))
    delays: list[float] = []
    client = no_sleep_client(kv, mode, "api/key", delays, base_url=vendor.url)
    assert call(client, "POST", "/v1/messages", json={}).status_code == 502
    assert vendor.state.requests == 1 and delays == []


@pytest.mark.parametrize("mode", MODES)
def test_get_is_retried_on_502_until_attempts_run_out(
    kv: KeyVault, vendor: VendorAPI, valid_key: str, mode: Mode
) -> None:
    vendor.state.script.extend([(502, {})] * 5)
    delays: list[float] = []
    client = no_sleep_client(kv, mode, "api/key", delays, base_url=vendor.url)
    assert call(client, "GET", "/v1/models").status_code == 502
    assert vendor.state.requests == 3  # [client] retry.attempts defaults to 3


@pytest.mark.parametrize("mode", MODES)
def test_a_500_is_not_retried_by_default(
    kv: KeyVault, vendor: VendorAPI, valid_key: str, mode: Mode
) -> None:
    """A 500 is usually a bug upstream, not a blip: the default statuses leave it out."""
    vendor.state.script.extend([(500, {})] * 3)
    delays: list[float] = []
    client = no_sleep_client(kv, mode, "api/key", delays, base_url=vendor.url)
    assert call(client, "GET", "/v1/models").status_code == 500
    assert vendor.state.requests == 1 and delays == []


@pytest.mark.parametrize("mode", MODES)
def test_hang_times_out_and_post_is_not_repeated(
    kv: KeyVault, vendor: VendorAPI, valid_key: str, mode: Mode
) -> None:
    vendor.state.hang = 1.0
    delays: list[float] = []
    client = no_sleep_client(kv, mode, "api/key", delays, base_url=vendor.url, timeout=0.2)
    with pytest.raises(httpx.ReadTimeout):
        call(client, "POST", "/v1/messages", json={})
    assert vendor.state.requests == 1
    client = no_sleep_client(kv, mode, "api/key", delays, base_url=vendor.url, timeout=0.2)
    with pytest.raises(httpx.ReadTimeout):
        call(client, "GET", "/v1/models")
    assert vendor.state.requests == 1 + 3


@pytest.mark.parametrize("mode", MODES)
def test_connection_refused_is_retried_even_for_post(
    kv: KeyVault, valid_key: str, mode: Mode
) -> None:
    delays: list[float] = []
    client = no_sleep_client(kv, mode, "api/key", delays, base_url="http://127.0.0.1:9")
    with pytest.raises(httpx.ConnectError):
        call(client, "POST", "/v1/messages", json={})
    assert len(delays) == 2


def test_retry_after_forms() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    policy = RetryPolicy(rng=lambda: 1.0)
    assert policy.delay(0) == 1.0 and policy.delay(2) == 4.0 and policy.delay(10) == 8.0
    assert policy.delay(0, retry_after=120) is None, "too long a Retry-After is not waited for"


# -- the breaker and the limit ------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("mode", MODES)
def test_breaker_opens_refuses_half_opens_closes(
    kv: KeyVault, vendor: VendorAPI, valid_key: str, mode: Mode
) -> None:
    clock = FakeClock()
    settings = ClientSettings(retry=RetryPolicy(max_attempts=1), breaker_threshold=3)
    client = make_client(kv, mode, "api/key", base_url=vendor.url, settings=settings)
    client.resilience.breaker = CircuitBreaker("api/key", threshold=3, cooldown=30, clock=clock)
    vendor.state.script.extend([(503, {})] * 3)

    async def several() -> list[Any]:
        async with client:
            out: list[Any] = []
            for _ in range(4):
                try:
                    out.append((await client.get("/v1/models")).status_code)
                except CircuitOpenError as exc:
                    out.append(exc)
            return out

    if mode == "sync":
        outcomes: list[Any] = []
        for _ in range(4):
            try:
                outcomes.append(client.get("/v1/models").status_code)
            except CircuitOpenError as exc:
                outcomes.append(exc)
    else:
        outcomes = asyncio.run(several())
    assert outcomes[:3] == [503, 503, 503]
    assert isinstance(outcomes[3], CircuitOpenError) and "circuit open" in str(outcomes[3])
    assert vendor.state.requests == 3, "an open breaker sends nothing"
    assert client.resilience.breaker.state == "open"
    clock.now += 31
    assert client.resilience.breaker.state == "half-open"
    if mode == "sync":
        assert client.get("/v1/models").status_code == 200
    else:

        async def one() -> int:
            async with make_client(
                kv, mode, "api/key", base_url=vendor.url, settings=settings
            ) as c2:
                c2.resilience.breaker = client.resilience.breaker
                return (await c2.get("/v1/models")).status_code

        assert asyncio.run(one()) == 200
    assert client.resilience.breaker.state == "closed"


def test_half_open_failure_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("x", threshold=2, cooldown=10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 10
    breaker.before_request()
    with pytest.raises(CircuitOpenError, match="trial"):
        breaker.before_request()
    breaker.record_failure()
    assert breaker.state == "open"


@pytest.mark.parametrize("mode", MODES)
def test_never_more_than_the_limit_in_flight(
    kv: KeyVault, vendor: VendorAPI, valid_key: str, mode: Mode
) -> None:
    vendor.state.delay = 0.1
    client = make_client(kv, mode, "api/key", base_url=vendor.url)
    if mode == "sync":
        threads = [threading.Thread(target=client.get, args=("/v1/models",)) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:

        async def many() -> None:
            async with client:
                await asyncio.gather(*(client.get("/v1/models") for _ in range(20)))

        asyncio.run(many())
    assert vendor.state.requests == 20
    assert vendor.state.max_in_flight == 5


# -- the cache ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_64_concurrent_cold_misses_make_one_fetch(
    kv: KeyVault, store: CountingProvider, vendor: VendorAPI, valid_key: str, mode: Mode
) -> None:
    cache = kv.cache("api/key")
    cache.invalidate()
    store.reads = 0
    barrier = threading.Barrier(64)
    results: list[KeySet] = []

    def read() -> None:
        barrier.wait()
        results.append(cache.get())

    if mode == "sync":
        threads = [threading.Thread(target=read) for _ in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        from keyvault.client.auth import KeySource, NeedKeys

        source = KeySource(cache)

        async def many() -> list[KeySet]:
            return await asyncio.gather(*(source.asynchronous(NeedKeys(False)) for _ in range(64)))

        results = asyncio.run(many())
    assert len(results) == 64 and store.reads == 1
    assert len({id(keyset) for keyset in results}) == 1


def test_cache_hit_is_lock_free_and_ttl_expires() -> None:
    clock = FakeClock()
    fetched: list[int] = []
    keyset = KeySet("k", KeyVersion("1", SecretValue(canary()), None))

    def fetch() -> KeySet:
        fetched.append(1)
        return keyset

    cache = KeyCache(fetch, ttl=300, jitter=0.1, clock=clock, rng=lambda: 1.0)
    assert cache.get() is keyset and cache.get() is keyset
    assert len(fetched) == 1
    clock.now += 269  # jittered TTL: 300 * (1 - 0.1 * 1.0) = 270
    cache.get()
    assert len(fetched) == 1
    clock.now += 2
    cache.get()
    assert len(fetched) == 2
    cache.invalidate()
    cache.get()
    assert len(fetched) == 3


def test_backend_down_serves_stale_then_fails_after_max_stale(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    keyset = KeySet("k", KeyVersion("1", SecretValue(canary()), None))
    down = [False]

    def fetch() -> KeySet:
        if down[0]:
            raise BackendUnavailableError("store unreachable (test)")
        return keyset

    cache = KeyCache(fetch, name="k", ttl=60, max_stale=3600, jitter=0, clock=clock)
    cache.get()
    down[0] = True
    with caplog.at_level(logging.WARNING, logger="keyvault.cache"):
        for step in range(10):
            clock.now += 300
            assert cache.get() is keyset, f"stale keyset served at +{(step + 1) * 300}s"
    warnings = [r for r in caplog.records if "serving the cached keyset" in r.getMessage()]
    assert len(warnings) == 1, "warned once per outage"
    clock.now += 700  # past an hour since the last good fetch
    with pytest.raises(BackendUnavailableError):
        cache.get()


def test_client_keeps_working_while_backend_is_down(
    kv: KeyVault, store: CountingProvider, vendor: VendorAPI, valid_key: str
) -> None:
    client = kv.client(
        "api/key", base_url=vendor.url, cache=CacheSettings(ttl=0.001, max_stale=3600)
    )
    assert client.get("/v1/models").status_code == 200
    store.down = True
    for _ in range(3):
        assert client.get("/v1/models").status_code == 200


# -- environment guard ------------------------------------------------------------


@pytest.mark.parametrize(("key_env", "process_env"), [("prod", "dev"), ("dev", "prod")])
def test_environment_guard_both_ways(
    kv: KeyVault,
    store: CountingProvider,
    vendor: VendorAPI,
    monkeypatch: pytest.MonkeyPatch,
    key_env: str,
    process_env: str,
) -> None:
    raw = canary()
    store.create("api/key", SecretValue(raw), environment=key_env)
    vendor.state.add_key(raw)
    monkeypatch.setenv("KEYVAULT_ENV", process_env)
    for factory in (kv.client, kv.async_client):
        with pytest.raises(
            EnvironmentMismatch, match=f"labelled '{key_env}'.*runs as '{process_env}'"
        ):
            factory("api/key", base_url=vendor.url)
    assert vendor.state.requests == 0
    monkeypatch.setenv("KEYVAULT_ENV", key_env)
    assert kv.client("api/key", base_url=vendor.url).get("/v1/models").status_code == 200


def test_environment_from_config_and_key_config(
    store: CountingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEYVAULT_ENV", raising=False)
    store.create("api/key", SecretValue(canary()))
    config = parse_config(
        {
            "environment": "dev",
            "providers": {"local": {"type": "file"}},
            "keys": {"api/key": {"environment": "prod"}},
        }
    )
    kv = KeyVault(config, providers={"local": store})
    with pytest.raises(EnvironmentMismatch):
        kv.client("api/key")
    check_environment("k", None, "prod")  # unlabelled keys are not judged
    check_environment("k", "prod", None)


# -- passthrough ------------------------------------------------------------


def test_httpx_options_pass_through(kv: KeyVault, valid_key: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    hooks: list[str] = []
    client = kv.client(
        "api/key",
        base_url="https://api.example.test",
        header="x-api-key",
        transport=httpx.MockTransport(handler),
        event_hooks={"request": [lambda r: hooks.append(r.url.path)]},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert client.get("/v1/models").status_code == 200
    assert seen[0].headers["x-api-key"] == valid_key
    assert seen[0].headers["anthropic-version"] == "2023-06-01"
    assert hooks == ["/v1/models"]
    assert client.timeout.connect == 5.0 and client.timeout.read == 30.0


def test_proxy_from_environment(
    kv: KeyVault, vendor: VendorAPI, valid_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", vendor.url)
    client = kv.client("api/key", base_url="http://vendor.invalid")
    assert client.get("/v1/models").status_code == 200, "the request went through the proxy"
    assert vendor.state.requests == 1


# -- secrets stay secret ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_canary_never_in_logs_errors_or_reprs(
    kv: KeyVault, store: CountingProvider, vendor: VendorAPI, mode: Mode
) -> None:
    old, new = canary("old"), canary("new")
    store.create("api/key", SecretValue(old))
    vendor.state.add_key(old)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        client = make_client(kv, mode, "api/key", base_url=vendor.url, header="x-api-key")
        texts = [repr(client), repr(client.auth), repr(kv.cache("api/key").get())]
        rotate(store, "api/key", new)
        vendor.state.add_key(new)
        vendor.state.revoke(old)
        vendor.state.script.append((503, {}))
        response = call(client, "GET", "/v1/models")
        texts += [repr(response), repr(response.request), str(response.request.headers.keys())]
        texts += [repr(response.request.headers)]  # x-api-key is masked like Authorization
        vendor.state.revoke(new)
        with pytest.raises(httpx.HTTPStatusError) as excinfo:
            call(
                make_client(kv, mode, "api/key", base_url=vendor.url), "GET", "/v1/models"
            ).raise_for_status()
        texts += [str(excinfo.value), repr(excinfo.value)]
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
    texts.append(stream.getvalue())
    assert "fp:" in stream.getvalue()
    for text in texts:
        assert_not_leaked(text, old, new, where="client logs, errors or reprs")


# -- the Anthropic SDK --------------------------------------------------------------------------


@pytest.fixture
def anthropic_keys(store: CountingProvider, vendor: VendorAPI) -> tuple[str, str]:
    """anthropic/prod holding a live key, and the value a rotation will bring."""
    old, new = canary("old"), canary("new")
    store.create("anthropic/prod", SecretValue(old))
    vendor.state.add_key(old)
    return old, new


def test_anthropic_client_sends_the_current_key(
    kv: KeyVault, store: CountingProvider, vendor: VendorAPI, anthropic_keys: tuple[str, str]
) -> None:
    old, new = anthropic_keys
    claude = kv.anthropic("anthropic/prod", base_url=vendor.url, max_retries=2)
    message = claude.messages.create(
        model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "ok"
    rotate(store, "anthropic/prod", new)
    vendor.state.add_key(new)
    vendor.state.revoke(old)
    vendor.state.script.append((529, {}))  # the SDK's own retry handles this one
    message = claude.messages.create(
        model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "ok"
    assert fingerprint(PLACEHOLDER_KEY) not in vendor.state.seen
    assert vendor.state.seen[-1] == fingerprint(new)
    with pytest.raises(TypeError, match="api_key"):
        kv.anthropic("anthropic/prod", api_key="x")


def test_async_anthropic_sends_the_current_key_from_any_event_loop(
    kv: KeyVault, store: CountingProvider, vendor: VendorAPI, anthropic_keys: tuple[str, str]
) -> None:
    old, new = anthropic_keys
    claude = kv.async_anthropic("anthropic/prod", base_url=vendor.url, max_retries=0)
    plain = kv.async_client("anthropic/prod", base_url=vendor.url)

    async def ask() -> str:
        message = await claude.messages.create(
            model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
        assert (await plain.get("/v1/models")).status_code == 200
        return str(message.content[0].text)

    assert asyncio.run(ask()) == "ok"
    rotate(store, "anthropic/prod", new)
    vendor.state.add_key(new)
    vendor.state.revoke(old)  # the cached old key gets a 401: refreshed, retried once
    assert asyncio.run(ask()) == "ok"  # a second loop: no "Event loop is closed"
    assert asyncio.run(ask()) == "ok"  # and a third
    assert vendor.state.seen[-1] == fingerprint(new)
    assert fingerprint(PLACEHOLDER_KEY) not in vendor.state.seen
    assert kv.limiter("anthropic/prod").in_flight == 0
    with pytest.raises(TypeError, match="api_key"):
        kv.async_anthropic("anthropic/prod", api_key="x")


def test_prometheus_metrics_by_key_and_fingerprint(
    kv: KeyVault, vendor: VendorAPI, valid_key: str
) -> None:
    import prometheus_client

    labels = {"key": "api/key", "fingerprint": fingerprint(valid_key)}
    series = [
        ("keyvault_client_requests_total", {**labels, "status": "200"}),
        ("keyvault_client_requests_total", {**labels, "status": "503"}),
        ("keyvault_client_retries_total", {"key": "api/key", "reason": "503"}),
    ]

    def counts() -> list[float]:  # the registry is global: compare before and after
        sample = prometheus_client.REGISTRY.get_sample_value
        return [sample(name, labels) or 0.0 for name, labels in series]

    before = counts()
    vendor.state.script.append((503, {}))
    delays: list[float] = []
    client = no_sleep_client(kv, "sync", "api/key", delays, base_url=vendor.url)
    assert client.get("/v1/models").status_code == 200
    assert [after - was for after, was in zip(counts(), before, strict=True)] == [1.0, 1.0, 1.0]
    exposition = prometheus_client.generate_latest().decode()
    assert_not_leaked(exposition, valid_key, where="the metrics")


def test_client_timeouts_come_from_the_config(store: CountingProvider, valid_key: str) -> None:
    from keyvault.config import parse_config

    default = KeyVault(
        parse_config({"providers": {"local": {"type": "file"}}}), providers={"local": store}
    )
    assert default.client("api/key").timeout == httpx.Timeout(30.0, connect=5.0)
    sdk_default = default.anthropic("api/key").timeout  # the SDK's own: long answers
    configured = KeyVault(
        parse_config(
            {
                "providers": {"local": {"type": "file"}},
                "client": {"timeout": "2m", "connect_timeout": "3s"},
            }
        ),
        providers={"local": store},
    )
    assert configured.client("api/key").timeout == httpx.Timeout(120.0, connect=3.0)
    assert configured.client("api/key", timeout=1.0).timeout == httpx.Timeout(1.0)
    assert configured.anthropic("api/key").timeout == 120.0
    assert sdk_default != 120.0
