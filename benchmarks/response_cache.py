"""The response cache: a hit versus the upstream call it saves, measured in the same run.

    python benchmarks/responses.py [--requests 500] [--rounds 3]

The upstream is the loopback vendor API (trivially fast, so the ratios are the least a real
API would show); the memory hit and the Redis hit (a real redis-server on a free loopback
port, entries sealed) are each compared with ``kv.client`` making the call.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keyvault.crypto import Keyring, MasterKey
from keyvault.providers.file import FileProvider
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue
from rotation.config import parse_config
from rotation.tokens import generate_token
from tests.servers import RedisServer, redis_binary
from tests.vendor_api import VendorAPI

MESSAGE = {"model": "claude-test", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def per_request(client: Any, count: int, **headers: str) -> float:
    """Seconds per POST /v1/messages, best kept by the caller."""
    start = time.perf_counter()
    for _ in range(count):
        client.post("/v1/messages", json=MESSAGE, headers=headers)
    return (time.perf_counter() - start) / count


def compare(label: str, client: Any, count: int, rounds: int) -> None:
    client.post("/v1/messages", json=MESSAGE)  # fills the entry
    per_request(client, 20), per_request(client, 20, **{"cache-control": "no-store"})
    hit = upstream = float("inf")
    for _ in range(rounds):
        hit = min(hit, per_request(client, count))
        upstream = min(upstream, per_request(client, count, **{"cache-control": "no-store"}))
    print(f"{label}")
    print(f"  upstream call (no-store) : {upstream * 1e6:8.0f} us")
    print(
        f"  cache hit                : {hit * 1e6:8.0f} us   {upstream / hit:.1f}x faster "
        "than the loopback upstream"
    )


def keyvault_with(store: FileProvider, cache: dict[str, Any]) -> KeyVault:
    config = parse_config(
        {"providers": {"local": {"type": "file"}}, "client": {"response_cache": cache}}
    )
    return KeyVault(config, providers={"local": store})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = FileProvider(
            "local", Path(tmp) / "s.db", Keyring([MasterKey.generate()]), create=True
        )
        raw = generate_token()
        store.create("api/key", SecretValue(raw))
        store.create("cache/seal", SecretValue(generate_token()))
        vendor = VendorAPI().start()
        vendor.state.add_key(raw)
        try:
            memory = keyvault_with(store, {"backend": "memory", "paths": ["/v1/messages"]})
            compare(
                "memory cache",
                memory.client("api/key", base_url=vendor.url),
                args.requests,
                args.rounds,
            )
            if redis_binary() is None:
                print("redis cache: skipped (no redis-server; scripts/install-test-tools)")
                return
            redis = RedisServer().start()
            try:
                sealed = keyvault_with(
                    store,
                    {
                        "backend": "redis",
                        "url": redis.url,
                        "paths": ["/v1/messages"],
                        "seal_key": "cache/seal",
                    },
                )
                compare(
                    "redis cache (sealed, loopback redis-server)",
                    sealed.client("api/key", base_url=vendor.url),
                    args.requests,
                    args.rounds,
                )
            finally:
                redis.stop()
        finally:
            vendor.stop()
            store.close()


if __name__ == "__main__":
    main()
