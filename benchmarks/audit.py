"""Audit throughput: 1,000 keys on the file store and on OpenBao, keys per second and
backend calls per key (SQL statements for SQLite, HTTP requests for OpenBao).

    python benchmarks/audit.py [--keys 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hvac

from keyvault.crypto import Keyring, MasterKey
from keyvault.model import utcnow
from keyvault.providers.base import KeyProvider
from keyvault.providers.file import FileProvider
from keyvault.providers.vault import VaultProvider
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue
from rotation.audit import audit
from rotation.config import parse_config
from rotation.tokens import generate_token
from tests.servers import BaoServer


def measure(label: str, provider: KeyProvider, keys: int, calls: list[int]) -> None:
    kv = KeyVault(
        parse_config({"providers": {provider.name: {"type": "file"}}}),
        providers={provider.name: provider},
    )
    audit(kv, utcnow())  # warm
    calls[0] = 0
    start = time.perf_counter()
    rows = audit(kv, utcnow())
    seconds = time.perf_counter() - start
    assert len(rows) == keys, (len(rows), keys)
    print(
        f"{label:8s}: {keys / seconds:8.0f} keys/s  ({seconds:.2f}s), "
        f"{calls[0] / keys:.3f} backend calls per key"
    )


def fill(provider: KeyProvider, keys: int) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: provider.create(
                    f"team-{i % 10}/key-{i:05d}", SecretValue(generate_token())
                ),
                range(keys),
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = FileProvider(
            "local", Path(tmp) / "s.db", Keyring([MasterKey.generate()]), create=True
        )
        fill(store, args.keys)
        statements = [0]
        store._db.set_trace_callback(lambda _sql: statements.__setitem__(0, statements[0] + 1))
        measure("file", store, args.keys, statements)
        store.close()

    server = BaoServer().start()
    try:
        client = hvac.Client(url=server.url)
        provider = VaultProvider(
            "bao", client, prefix="audit/", environ={"VAULT_TOKEN": server.root_token}
        )
        fill(provider, args.keys)
        requests = [0]

        def count(response: Any, *args: Any, **kwargs: Any) -> Any:
            requests[0] += 1
            return response

        client.adapter.session.hooks["response"].append(count)
        measure("openbao", provider, args.keys, requests)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
