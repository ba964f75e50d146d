"""The thin client's costs, each as a ratio against a baseline measured in the same run.

1. A cached key read (``KeyCache.get`` hit) versus a plain dict lookup with a
   ``time.monotonic()`` TTL check (goal: at most 2x), and versus
   aws-secretsmanager-caching's ``get_secret_string`` cache hit.
2. Requests per second through ``kv.client`` versus a plain ``httpx.Client`` with a static
   header, against the same loopback server (goal: at least 0.95x).
3. ``kv.anthropic(...).messages.create`` versus a plain ``anthropic.Anthropic``, and
   ``kv.async_anthropic`` versus a plain ``anthropic.AsyncAnthropic`` (goal: at least 0.97x).
4. The per-key limiter: one uncontended acquire and release, against a loopback request.

    python benchmarks/client.py [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anthropic
import httpx

from keyvault.crypto import Keyring, MasterKey
from keyvault.providers.file import FileProvider
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue
from rotation.config import parse_config
from rotation.tokens import generate_token

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def vendor_process(*keys: str) -> Iterator[str]:
    """The loopback vendor in a process of its own (its URL): a server thread in this
    process would take the GIL from the client being measured, counting its CPU twice."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.vendor_api"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("".join(f"{key}\n" for key in keys) + "\n")
    proc.stdin.flush()
    url = proc.stdout.readline().strip()
    try:
        yield url
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def per_call(stmt: object, number: int) -> float:
    """Best of five runs, in seconds per call."""
    timer = timeit.Timer(stmt)  # type: ignore[arg-type]
    return min(timer.repeat(repeat=5, number=number)) / number


def bench_cache(kv: KeyVault) -> None:
    cache = kv.cache("api/key")
    cache.get()
    entry = {"api/key": (cache.get(), time.monotonic() + 300)}
    monotonic = time.monotonic

    def dict_lookup() -> object:
        value, fresh_until = entry["api/key"]
        return value if monotonic() < fresh_until else None

    n = 200_000
    ours = per_call(cache.get, n)
    baseline = per_call(dict_lookup, n)
    print("cached key read")
    print(f"  dict + monotonic TTL : {baseline * 1e9:8.0f} ns")
    print(
        f"  KeyCache.get hit     : {ours * 1e9:8.0f} ns   ratio {ours / baseline:.2f}x (goal <= 2x)"
    )
    full = per_call(lambda: kv.keyset("api/key"), n // 4)
    print(f"  kv.keyset(name)      : {full * 1e9:8.0f} ns   (the public entry point)")

    from aws_secretsmanager_caching import SecretCache, SecretCacheConfig
    from moto import mock_aws

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        import boto3

        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name="api/key", SecretString=generate_token())
        aws_cache = SecretCache(SecretCacheConfig(), client=client)
        aws_cache.get_secret_string("api/key")
        theirs = per_call(lambda: aws_cache.get_secret_string("api/key"), 20_000)
    print(
        f"  aws-secretsmanager-caching hit: {theirs * 1e9:8.0f} ns   "
        f"KeyCache is {theirs / ours:.0f}x faster"
    )


def requests_per_second(client: httpx.Client, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        client.get("/v1/models")
    return count / (time.perf_counter() - start)


def bench_http(kv: KeyVault, url: str, raw: str, count: int, rounds: int) -> None:
    plain = httpx.Client(base_url=url, headers={"x-api-key": raw})
    ours = kv.client("api/key", base_url=url, header="x-api-key")
    for client in (plain, ours):
        requests_per_second(client, 50)  # warm the connection
    best_plain = best_ours = 0.0
    for _ in range(rounds):  # interleaved, so drift hits both alike
        best_plain = max(best_plain, requests_per_second(plain, count))
        best_ours = max(best_ours, requests_per_second(ours, count))
    print("requests per second, loopback, best of rounds")
    print(f"  plain httpx.Client   : {best_plain:8.0f} req/s")
    print(
        f"  kv.client            : {best_ours:8.0f} req/s   "
        f"ratio {best_ours / best_plain:.3f}x (goal >= 0.95x)"
    )


def bench_overhead(kv: KeyVault, raw: str) -> None:
    """The client's own CPU per request, on httpx.MockTransport: no socket, no server thread
    taking the GIL, so what is left is the work keyvault adds (auth flow, limiter, breaker,
    retry bookkeeping, metrics)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ok": True})

    plain = httpx.Client(
        base_url="http://bench", headers={"x-api-key": raw}, transport=httpx.MockTransport(handler)
    )
    ours = kv.client(
        "api/key",
        base_url="http://bench",
        header="x-api-key",
        transport=httpx.MockTransport(handler),
    )
    base = per_call(lambda: plain.get("/v1/models"), 2000)
    mine = per_call(lambda: ours.get("/v1/models"), 2000)
    print("per-request CPU on httpx.MockTransport (no network)")
    print(f"  plain httpx.Client   : {base * 1e6:8.1f} us")
    print(
        f"  kv.client            : {mine * 1e6:8.1f} us   "
        f"keyvault adds {(mine - base) * 1e6:.1f} us"
    )

    import httpx2

    answer = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }

    def handler2(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=answer)

    sdk = anthropic.Anthropic(
        api_key=raw,
        base_url="http://bench",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler2)),
    )
    kv_sdk = kv.anthropic(
        "api/key",
        base_url="http://bench",
        http_options={"transport": httpx2.MockTransport(handler2)},
    )
    messages = [{"role": "user", "content": "hi"}]

    def create(client: anthropic.Anthropic) -> object:
        return client.messages.create(model="claude-test", max_tokens=8, messages=messages)  # type: ignore[arg-type]

    sdk_base = per_call(lambda: create(sdk), 300)
    sdk_mine = per_call(lambda: create(kv_sdk), 300)
    print(f"  plain anthropic      : {sdk_base * 1e6:8.1f} us")
    print(
        f"  kv.anthropic         : {sdk_mine * 1e6:8.1f} us   "
        f"keyvault adds {(sdk_mine - sdk_base) * 1e6:.1f} us ({sdk_base / sdk_mine:.3f}x)"
    )


def bench_anthropic(kv: KeyVault, url: str, raw: str, count: int, rounds: int) -> None:
    plain = anthropic.Anthropic(api_key=raw, base_url=url)
    ours = kv.anthropic("api/key", base_url=url)
    messages = [{"role": "user", "content": "hi"}]

    def rate(client: anthropic.Anthropic) -> float:
        start = time.perf_counter()
        for _ in range(count):
            client.messages.create(model="claude-test", max_tokens=8, messages=messages)  # type: ignore[arg-type]
        return count / (time.perf_counter() - start)

    rate(plain), rate(ours)
    best_plain = best_ours = 0.0
    for _ in range(rounds):
        best_plain = max(best_plain, rate(plain))
        best_ours = max(best_ours, rate(ours))
    print("anthropic messages.create per second")
    print(f"  plain anthropic.Anthropic : {best_plain:8.0f} calls/s")
    print(
        f"  kv.anthropic              : {best_ours:8.0f} calls/s   "
        f"ratio {best_ours / best_plain:.3f}x (goal >= 0.97x)"
    )


def bench_async_anthropic(kv: KeyVault, url: str, raw: str, count: int, rounds: int) -> None:
    import asyncio

    plain = anthropic.AsyncAnthropic(api_key=raw, base_url=url)
    ours = kv.async_anthropic("api/key", base_url=url)
    messages = [{"role": "user", "content": "hi"}]

    async def rate(client: anthropic.AsyncAnthropic) -> float:
        start = time.perf_counter()
        for _ in range(count):
            await client.messages.create(model="claude-test", max_tokens=8, messages=messages)  # type: ignore[arg-type]
        return count / (time.perf_counter() - start)

    async def run() -> tuple[float, float]:
        await rate(plain), await rate(ours)
        best_plain = best_ours = 0.0
        for _ in range(rounds):
            best_plain = max(best_plain, await rate(plain))
            best_ours = max(best_ours, await rate(ours))
        return best_plain, best_ours

    best_plain, best_ours = asyncio.run(run())
    print("anthropic async messages.create per second (one event loop, one at a time)")
    print(f"  plain anthropic.AsyncAnthropic : {best_plain:8.0f} calls/s")
    print(
        f"  kv.async_anthropic             : {best_ours:8.0f} calls/s   "
        f"ratio {best_ours / best_plain:.3f}x (goal >= 0.97x)"
    )


def bench_limiter(kv: KeyVault, url: str, raw: str) -> None:
    limiter = kv.limiter("api/key")

    def slot() -> None:
        limiter.acquire()
        limiter.release()

    ours = per_call(slot, 100_000)
    plain = httpx.Client(base_url=url, headers={"x-api-key": raw})
    requests_per_second(plain, 50)
    request = 1 / requests_per_second(plain, 500)
    print("the per-key limiter, uncontended")
    print(f"  acquire + release    : {ours * 1e9:8.0f} ns")
    print(
        f"  a loopback request   : {request * 1e6:8.0f} us   the limiter is "
        f"{ours / request * 100:.3f}% of it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = FileProvider(
            "local", Path(tmp) / "s.db", Keyring([MasterKey.generate()]), create=True
        )
        kv = KeyVault(
            parse_config({"providers": {"local": {"type": "file"}}}), providers={"local": store}
        )
        raw = generate_token()
        store.create("api/key", SecretValue(raw))
        try:
            bench_cache(kv)
            with vendor_process(raw) as url:
                bench_http(kv, url, raw, args.requests, args.rounds)
                bench_overhead(kv, raw)
                bench_anthropic(kv, url, raw, max(50, args.requests // 4), args.rounds)
                bench_async_anthropic(kv, url, raw, max(50, args.requests // 4), args.rounds)
                bench_limiter(kv, url, raw)
        finally:
            store.close()


if __name__ == "__main__":
    main()
