"""The response cache and request merging, on a loopback vendor and a real Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyvault.client.responses import (
    MAX_STORED_BODY,
    MemoryStore,
    StoredResponse,
    cache_key,
    canonical_body,
    storable,
)
from keyvault.config import parse_config
from keyvault.errors import ConfigError
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue
from tests.fixtures_client import CountingProvider, rotate
from tests.leaks import assert_not_leaked, canary
from tests.vendor_api import VendorAPI

MESSAGE = {"model": "claude-test", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


# -- the key of an entry -----------------------------------------------------------------------


def test_the_cache_key_is_a_sha256_over_canonical_parts() -> None:
    """A known answer, written out: method, scheme, host, path and query, key name, then the
    body as canonical JSON (sorted keys, no whitespace)."""
    body = b'{"model": "m", "max_tokens": 8}'
    expected = "73808f7b1804bc404a3392117480fbe606f4e3ced0a8d3d71299654133a0207b"
    assert (
        cache_key("POST", "https", "api.anthropic.com", "/v1/messages", body, "anthropic/prod")
        == expected
    )
    same = b'{"max_tokens":8,\n "model":"m"}'  # other order, other whitespace
    assert (
        cache_key("post", "https", "api.anthropic.com", "/v1/messages", same, "anthropic/prod")
        == expected
    )


@pytest.mark.parametrize(
    "change",
    [
        {"method": "GET"},
        {"host": "staging.example"},
        {"path": "/v1/messages?beta=1"},
        {"key_name": "anthropic/dev"},
        {"body": b'{"model": "m", "max_tokens": 9}'},
    ],
)
def test_any_part_changes_the_key(change: dict[str, Any]) -> None:
    parts: dict[str, Any] = {
        "method": "POST",
        "host": "api.anthropic.com",
        "path": "/v1/messages",
        "key_name": "anthropic/prod",
        "body": b'{"model": "m", "max_tokens": 8}',
    }
    base = cache_key(
        parts["method"], "https", parts["host"], parts["path"], parts["body"], parts["key_name"]
    )
    parts.update(change)
    changed = cache_key(
        parts["method"], "https", parts["host"], parts["path"], parts["body"], parts["key_name"]
    )
    assert changed != base


def test_headers_that_change_the_answer_are_part_of_the_key() -> None:
    def key(*varying: tuple[str, str]) -> str | None:
        return cache_key("POST", "https", "h", "/v1/messages", b"{}", "k", varying)

    plain = key()
    beta = key(("anthropic-beta", "tools-2026-01-01"))
    assert len({plain, beta, key(("anthropic-version", "2023-06-01"))}) == 3
    assert key(("Anthropic-Beta", "tools-2026-01-01")) == beta  # names in any case
    assert key(("accept", "a"), ("anthropic-beta", "b")) == key(
        ("anthropic-beta", "b"), ("accept", "a")
    )


def test_a_streamed_request_has_no_key_and_a_non_json_body_is_hashed_as_sent() -> None:
    assert cache_key("POST", "https", "h", "/v1/messages", b'{"stream": true}', "k") is None
    assert canonical_body(b"not json") == (b"raw:not json", False)
    assert canonical_body(b'{"stream": false}') == (b'json:{"stream":false}', False)


def test_the_memory_store_is_a_bounded_lru_with_a_ttl() -> None:
    now = [0.0]
    store = MemoryStore(ttl=60, max_entries=2, clock=lambda: now[0])
    answer = StoredResponse(200, (("content-type", "application/json"),), b"{}")
    store.put("a", answer)
    store.put("b", answer)
    assert store.get("a") == answer  # a is now the most recently used
    store.put("c", answer)  # evicts b, the least recently used
    assert store.get("b") is None and store.get("a") == answer and store.get("c") == answer
    now[0] = 61
    assert store.get("a") is None and len(store) == 1


def test_what_is_kept() -> None:
    assert storable(200, "application/json", 10)
    assert not storable(429, "application/json", 10)
    assert not storable(200, "text/event-stream; charset=utf-8", 10)
    assert not storable(200, "application/json", MAX_STORED_BODY + 1)


def test_stored_answers_drop_framing_cookies_and_hop_by_hop_headers() -> None:
    stored = StoredResponse.capture(
        200,
        [
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", "10"),
            ("Set-Cookie", "session=abc"),
            ("Connection", "keep-alive"),
            ("request-id", "req_1"),
        ],
        b"{}",
    )
    assert stored.headers == (("Content-Type", "application/json"), ("request-id", "req_1"))
    assert StoredResponse.decode(stored.encode()) == stored


# -- through the clients, memory backend ---------------------------------------------------------


def cached_kv(store: CountingProvider, **cache: Any) -> KeyVault:
    settings = {"backend": "memory", "paths": ["/v1/messages"], **cache}
    config = parse_config(
        {"providers": {"local": {"type": "file"}}, "client": {"response_cache": settings}}
    )
    return KeyVault(config, providers={"local": store})


@pytest.fixture
def key(store: CountingProvider, vendor: VendorAPI) -> str:
    raw = canary()
    store.create("api/key", SecretValue(raw))
    vendor.state.add_key(raw)
    return raw


def test_an_identical_request_is_answered_from_the_cache(
    store: CountingProvider, vendor: VendorAPI, key: str
) -> None:
    kv = cached_kv(store)
    client = kv.client("api/key", base_url=vendor.url)
    first = client.post("/v1/messages", json=MESSAGE)
    second = client.post("/v1/messages", json=dict(reversed(MESSAGE.items())))  # same JSON
    assert (first.headers["x-keyvault-cache"], second.headers["x-keyvault-cache"]) == (
        "miss",
        "hit",
    )
    assert first.json() == second.json() and vendor.state.requests == 1
    other = client.post("/v1/messages", json={**MESSAGE, "max_tokens": 9})
    assert other.headers["x-keyvault-cache"] == "miss" and vendor.state.requests == 2
    beta = client.post("/v1/messages", json=MESSAGE, headers={"anthropic-beta": "x-2026"})
    assert beta.headers["x-keyvault-cache"] == "miss" and vendor.state.requests == 3


@pytest.mark.parametrize(
    ("how", "kwargs"),
    [
        ("a streamed request", {"json": {**MESSAGE, "stream": True}}),
        ("Cache-Control: no-store", {"json": MESSAGE, "headers": {"Cache-Control": "no-store"}}),
    ],
)
def test_what_bypasses_the_cache(
    store: CountingProvider, vendor: VendorAPI, key: str, how: str, kwargs: dict[str, Any]
) -> None:
    kv = cached_kv(store)
    client = kv.client("api/key", base_url=vendor.url)
    for _ in range(2):
        response = client.post("/v1/messages", **kwargs)
        assert response.status_code == 200
        assert "x-keyvault-cache" not in response.headers, how
    assert vendor.state.requests == 2


def test_only_configured_paths_and_only_2xx_answers_are_kept(
    store: CountingProvider, vendor: VendorAPI, key: str
) -> None:
    kv = cached_kv(store)
    client = kv.client("api/key", base_url=vendor.url)
    client.get("/v1/models")
    client.get("/v1/models")
    assert vendor.state.requests == 2  # not a cached path
    vendor.state.script.append((400, {}))
    assert client.post("/v1/messages", json=MESSAGE).status_code == 400
    assert client.post("/v1/messages", json=MESSAGE).status_code == 200  # the 400 was not kept
    assert client.post("/v1/messages", json=MESSAGE).headers["x-keyvault-cache"] == "hit"
    assert vendor.state.requests == 4


def test_two_keys_never_share_an_entry(
    store: CountingProvider, vendor: VendorAPI, key: str
) -> None:
    other = canary("other")
    store.create("api/other", SecretValue(other))
    vendor.state.add_key(other)
    kv = cached_kv(store)
    one = kv.client("api/key", base_url=vendor.url)
    two = kv.client("api/other", base_url=vendor.url)
    assert one.post("/v1/messages", json=MESSAGE).headers["x-keyvault-cache"] == "miss"
    assert two.post("/v1/messages", json=MESSAGE).headers["x-keyvault-cache"] == "miss"
    assert vendor.state.requests == 2


def test_twenty_identical_concurrent_requests_make_one_upstream_call(
    store: CountingProvider, vendor: VendorAPI, key: str
) -> None:
    kv = cached_kv(store)
    sync_client = kv.client("api/key", base_url=vendor.url)
    async_client = kv.async_client("api/key", base_url=vendor.url)
    vendor.state.delay = 0.3  # the leader's call is in flight while the others arrive
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        response = sync_client.post("/v1/messages", json=MESSAGE)
        with lock:
            answers.append(response)

    async def ten() -> None:
        async with async_client:
            for response in await asyncio.gather(
                *(async_client.post("/v1/messages", json=MESSAGE) for _ in range(10))
            ):
                with lock:
                    answers.append(response)

    threads = [threading.Thread(target=one) for _ in range(10)]
    threads.append(threading.Thread(target=lambda: asyncio.run(ten())))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert vendor.state.requests == 1
    assert len(answers) == 20 and {r.json()["id"] for r in answers} == {"msg_1"}
    kinds = sorted(r.headers["x-keyvault-cache"] for r in answers)
    assert kinds.count("miss") == 1 and set(kinds) <= {"miss", "merged", "hit"}


def test_a_flight_that_ended_between_lookup_and_join_is_not_flown_again(
    store: CountingProvider, vendor: VendorAPI, key: str
) -> None:
    """The window merging alone cannot close: this request's lookup missed, then an
    identical flight stored its answer and ended before this request looked for it. The
    leader asks the store once more before it sends."""
    kv = cached_kv(store)
    client = kv.client("api/key", base_url=vendor.url)
    cache = kv.response_cache()
    assert cache is not None
    real_get = cache.store.get
    answer = StoredResponse(200, (("content-type", "application/json"),), b'{"id": "msg_other"}')
    lookups = []

    def get_then_other_flight_lands(entry: str) -> StoredResponse | None:
        lookups.append(entry)
        if len(lookups) == 1:  # the first lookup misses; meanwhile the other flight lands
            cache.store.put(entry, answer)
            return None
        return real_get(entry)

    cache.store.get = get_then_other_flight_lands  # type: ignore[method-assign]
    response = client.post("/v1/messages", json=MESSAGE)
    assert response.headers["x-keyvault-cache"] == "hit" and response.json()["id"] == "msg_other"
    assert vendor.state.requests == 0 and len(lookups) == 2


def test_a_merged_request_shares_the_leaders_error_answer(
    store: CountingProvider, vendor: VendorAPI, key: str
) -> None:
    kv = cached_kv(store)
    client = kv.client("api/key", base_url=vendor.url)
    vendor.state.delay = 0.3
    vendor.state.script.append((400, {}))
    answers: list[int] = []

    def one() -> None:
        answers.append(client.post("/v1/messages", json=MESSAGE).status_code)

    threads = [threading.Thread(target=one) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [400] * 5 and vendor.state.requests == 1


def test_a_cancelled_leader_leaves_its_followers_to_send_their_own(
    store: CountingProvider, vendor: VendorAPI, key: str
) -> None:
    kv = cached_kv(store)
    client = kv.async_client("api/key", base_url=vendor.url)
    vendor.state.delay = 0.3

    async def scene() -> httpx.Response:
        leader = asyncio.ensure_future(client.post("/v1/messages", json=MESSAGE))
        while vendor.state.requests == 0:
            await asyncio.sleep(0.005)
        follower = asyncio.ensure_future(client.post("/v1/messages", json=MESSAGE))
        await asyncio.sleep(0.05)  # the follower waits on the leader's flight
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        return await follower  # not cancelled with it: it sends its own request

    answer = asyncio.run(scene())
    assert answer.status_code == 200 and answer.headers["x-keyvault-cache"] == "miss"
    assert vendor.state.requests == 2


def test_kv_anthropic_uses_the_cache(store: CountingProvider, vendor: VendorAPI, key: str) -> None:
    kv = cached_kv(store)
    claude = kv.anthropic("api/key", base_url=vendor.url, max_retries=0)
    first = claude.messages.create(**MESSAGE)
    second = claude.messages.with_raw_response.create(**MESSAGE)
    assert second.headers["x-keyvault-cache"] == "hit"
    assert second.parse().id == first.id and vendor.state.requests == 1


def test_response_cache_config_errors_name_the_field() -> None:
    base = {"providers": {"local": {"type": "file"}}}
    cases = [
        ({"backend": "memcached", "paths": ["/v1"]}, "backend: 'memcached' is not one of"),
        ({"paths": []}, "paths: list the path prefixes"),
        ({"paths": ["v1/messages"]}, "paths: 'v1/messages' is not a path"),
        ({"backend": "redis", "paths": ["/v1"]}, "url: the redis backend needs url"),
        ({"backend": "redis", "url": "redis://h:1/0", "paths": ["/v1"]}, "seal_key: the redis"),
        ({"paths": ["/v1"], "ttl": "0s"}, "ttl: must be longer than zero"),
    ]
    for settings, message in cases:
        with pytest.raises(ConfigError, match=rf"client.response_cache.{message}"):
            parse_config({**base, "client": {"response_cache": settings}})


# -- the Redis backend, on a real Redis ----------------------------------------------------------


def redis_config(directory: Path, vendor: VendorAPI, redis_url: str) -> Path:
    path = directory / "keyvault.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [providers.local]
            type = "file"
            path = "store.db"
            master_key_file = "master.key"

            [client.response_cache]
            backend = "redis"
            url = "{redis_url}"
            ttl = "10m"
            paths = ["/v1/messages"]
            seal_key = "cache/seal"
            """
        )
    )
    return path


@pytest.fixture
def redis_kv(tmp_path: Path, vendor: VendorAPI, redis_server: Any) -> KeyVault:
    from tests.conftest import prepare_workdir

    config = redis_config(tmp_path, vendor, redis_server.url)
    prepare_workdir(tmp_path, config.read_text())
    kv = keyvault_load(config)
    provider = kv.provider("local")
    provider.create("cache/seal", SecretValue(canary("seal")))
    raw = canary()
    provider.create("api/key", SecretValue(raw))
    vendor.state.add_key(raw)
    return kv


def keyvault_load(path: Path) -> KeyVault:
    import keyvault

    return keyvault.load(path)


def test_redis_entries_are_sealed_and_shared_by_two_processes(
    tmp_path: Path, vendor: VendorAPI, redis_server: Any, redis_kv: KeyVault
) -> None:
    import redis

    vendor.state.answer_text = canary("answer")
    program = textwrap.dedent(
        f"""
        import keyvault
        kv = keyvault.load({str(tmp_path / "keyvault.toml")!r})
        client = kv.client("api/key", base_url={vendor.url!r})
        response = client.post("/v1/messages", json={MESSAGE!r})
        print(response.headers["x-keyvault-cache"], response.json()["id"])
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert outputs == [["miss", "msg_1"], ["hit", "msg_1"]]
    assert vendor.state.requests == 1
    raw = redis.Redis.from_url(redis_server.url)
    names = raw.keys("keyvault:response:*")
    assert len(names) == 1
    value = raw.get(names[0])
    assert vendor.state.answer_text.encode() not in value and b"msg_1" not in value
    assert 0 < raw.pttl(names[0]) <= 600_000  # Redis expires it


def test_a_tampered_redis_entry_is_a_miss_not_an_answer(
    vendor: VendorAPI, redis_server: Any, redis_kv: KeyVault
) -> None:
    import redis

    client = redis_kv.client("api/key", base_url=vendor.url)
    client.post("/v1/messages", json=MESSAGE)
    raw = redis.Redis.from_url(redis_server.url)
    (name,) = raw.keys("keyvault:response:*")
    value = bytearray(raw.get(name))
    value[-1] ^= 1
    raw.set(name, bytes(value))
    again = client.post("/v1/messages", json=MESSAGE)
    assert again.status_code == 200 and again.headers["x-keyvault-cache"] == "miss"
    assert vendor.state.requests == 2
    # a genuine entry copied under another request's name does not answer that request
    other = {**MESSAGE, "max_tokens": 9}
    client.post("/v1/messages", json=other)
    names = raw.keys("keyvault:response:*")
    assert len(names) == 2
    first, second = names
    raw.set(second, raw.get(first))  # both slots now hold first's sealed answer
    answers = {
        client.post("/v1/messages", json=body).headers["x-keyvault-cache"]
        for body in (MESSAGE, other)
    }
    assert "hit" in answers and vendor.state.requests == 4  # the moved one was a miss


def test_killing_redis_loses_no_request(
    vendor: VendorAPI, redis_server: Any, redis_kv: KeyVault, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_kv.client("api/key", base_url=vendor.url)
    assert client.post("/v1/messages", json=MESSAGE).headers["x-keyvault-cache"] == "miss"
    assert client.post("/v1/messages", json=MESSAGE).headers["x-keyvault-cache"] == "hit"
    redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="keyvault.client"):
        statuses = [client.post("/v1/messages", json=MESSAGE).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert vendor.state.requests == 1 + 5
    warnings = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert len(warnings) == 1


def test_a_hung_redis_costs_one_short_timeout_not_a_hung_request(
    vendor: VendorAPI, redis_server: Any, redis_kv: KeyVault
) -> None:
    import prometheus_client

    def errors() -> float:
        value = prometheus_client.REGISTRY.get_sample_value(
            "keyvault_client_response_cache_total", {"key": "api/key", "result": "error"}
        )
        return value or 0.0

    before = errors()
    client = redis_kv.client("api/key", base_url=vendor.url)
    client.post("/v1/messages", json=MESSAGE)
    redis_server.pause()
    try:
        statuses = [client.post("/v1/messages", json=MESSAGE).status_code for _ in range(5)]
    finally:
        redis_server.resume()
    assert statuses == [200] * 5 and vendor.state.requests == 6
    assert errors() == before + 1  # one timed-out read; then Redis is left alone for 5 s


def test_hits_misses_and_merged_requests_are_counted(
    store: CountingProvider, vendor: VendorAPI, key: str
) -> None:
    import prometheus_client

    def sample(name: str, **labels: str) -> float:
        value = prometheus_client.REGISTRY.get_sample_value(name, {"key": "api/key", **labels})
        return value or 0.0

    counters = [
        ("keyvault_client_response_cache_total", {"result": "hit"}),
        ("keyvault_client_response_cache_total", {"result": "miss"}),
        ("keyvault_client_merged_requests_total", {}),
    ]
    before = [sample(name, **labels) for name, labels in counters]
    kv = cached_kv(store)
    client = kv.client("api/key", base_url=vendor.url)
    vendor.state.delay = 0.3
    threads = [
        threading.Thread(target=client.post, args=("/v1/messages",), kwargs={"json": MESSAGE})
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.post("/v1/messages", json=MESSAGE)
    after = [sample(name, **labels) for name, labels in counters]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 2]
    assert vendor.state.requests == 1
    exposed = prometheus_client.generate_latest().decode()
    assert_not_leaked(exposed, key, where="the client's metrics")


def test_a_seal_key_that_cannot_be_read_sends_requests_upstream(
    vendor: VendorAPI, redis_kv: KeyVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyvault.errors import BackendUnavailableError

    client = redis_kv.client("api/key", base_url=vendor.url)
    keyset = redis_kv.keyset

    def seal_key_down(name: str) -> Any:
        if name == "cache/seal":
            raise BackendUnavailableError("the store is down (test)")
        return keyset(name)

    monkeypatch.setattr(redis_kv, "keyset", seal_key_down)
    answers = [client.post("/v1/messages", json=MESSAGE) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert vendor.state.requests == 2  # nothing was sealed, so nothing was kept


def test_entries_outlive_a_seal_key_rotation_until_the_old_key_is_retired(
    vendor: VendorAPI, redis_kv: KeyVault
) -> None:
    client = redis_kv.client("api/key", base_url=vendor.url)
    seal = redis_kv.cache("cache/seal")
    assert client.post("/v1/messages", json=MESSAGE).headers["x-keyvault-cache"] == "miss"
    provider = redis_kv.provider("local")
    rotate(provider, "cache/seal", canary("seal-2"))
    seal.invalidate()
    # sealed under the old primary, now the secondary: still opens
    assert client.post("/v1/messages", json=MESSAGE).headers["x-keyvault-cache"] == "hit"
    info = provider.describe("cache/seal")
    assert info.previous is not None
    provider.retire("cache/seal", expected_previous=info.previous.version)
    seal.invalidate()
    # the old key is gone: its entry no longer opens, so it is a miss and is sealed anew
    assert client.post("/v1/messages", json=MESSAGE).headers["x-keyvault-cache"] == "miss"
    assert client.post("/v1/messages", json=MESSAGE).headers["x-keyvault-cache"] == "hit"
    assert vendor.state.requests == 2


def test_a_missing_seal_key_is_named_for_what_it_is(
    tmp_path: Path, vendor: VendorAPI, redis_server: Any
) -> None:
    from keyvault.errors import KeyNotFoundError
    from tests.conftest import prepare_workdir

    config = redis_config(tmp_path, vendor, redis_server.url)
    prepare_workdir(tmp_path, config.read_text())
    kv = keyvault_load(config)
    kv.provider("local").create("api/key", SecretValue(canary()))
    with pytest.raises(KeyNotFoundError, match=r"\[client.response_cache\] seal_key: .*cache/seal"):
        kv.client("api/key", base_url=vendor.url)
