"""Listing keys with metadata from OpenBao: concurrent metadata reads vs one by one.

Starts its own OpenBao dev server on a free loopback port, creates N keys, then lists them
both ways and prints keys per second for each and the ratio (concurrent / sequential).

    python benchmarks/vault_listing.py [--keys 1000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hvac

from benchmarks.latency_proxy import LatencyProxy
from keyvault.providers.vault import VaultProvider
from keyvault.secret import SecretValue
from rotation.tokens import generate_token
from tests.servers import BaoServer


def timed(func):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def compare(label: str, provider: VaultProvider, args: argparse.Namespace) -> None:
    provider.list_keys()  # warm the connection pool
    seq, seq_s = timed(provider.list_keys_sequential)
    conc, conc_s = timed(provider.list_keys)
    assert len(seq) == len(conc) == args.keys
    print(f"[{label}]")
    print(f"  one by one : {args.keys / seq_s:8.0f} keys/s  ({seq_s:.2f}s)")
    print(
        f"  concurrent : {args.keys / conc_s:8.0f} keys/s  "
        f"({conc_s:.2f}s, {args.concurrency} workers)"
    )
    print(f"  ratio      : {seq_s / conc_s:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--rtt-ms", type=float, default=2.0, help="added round trip, as to a Vault nearby"
    )
    args = parser.parse_args()

    server = BaoServer().start()
    try:
        provider = VaultProvider(
            "bao",
            hvac.Client(url=server.url),
            prefix="bench/",
            list_concurrency=args.concurrency,
            environ={"VAULT_TOKEN": server.root_token},
        )
        names = [f"team-{i % 10}/key-{i:05d}" for i in range(args.keys)]
        with ThreadPoolExecutor(8) as pool:
            _, setup = timed(
                lambda: list(
                    pool.map(lambda n: provider.create(n, SecretValue(generate_token())), names)
                )
            )
        print(f"created {args.keys} keys in {setup:.1f}s")
        compare("loopback", provider, args)
        with LatencyProxy(server.port, args.rtt_ms / 1000) as proxy:
            remote = VaultProvider(
                "bao",
                hvac.Client(url=f"http://127.0.0.1:{proxy.port}"),
                prefix="bench/",
                list_concurrency=args.concurrency,
                environ={"VAULT_TOKEN": server.root_token},
            )
            compare(f"+{args.rtt_ms:g} ms RTT", remote, args)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
