"""Listing keys for an audit on AWS Secrets Manager: keyvault's tag-index listing versus
the naive loop that describes every secret, against a moto server on loopback.

    python benchmarks/aws_listing.py [--keys 1000]

Prints API calls and seconds for both, and the ratios. Calls matter more than seconds on
real AWS: ListSecrets is limited to 100/s and DescribeSecret to 40,000/s per account, and
every call is a round trip.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from moto.server import ThreadedMotoServer

from keyvault.providers.aws import AwsProvider
from keyvault.secret import SecretValue
from rotation.tokens import generate_token
from tests.servers import free_port


def counted(client: Any) -> Counter[str]:
    calls: Counter[str] = Counter()
    client.meta.events.register(
        "before-call.*.*", lambda event_name, **_: calls.update([event_name.rsplit(".", 1)[-1]])
    )
    return calls


def naive_listing(client: Any, prefix: str) -> int:
    """What a hand-rolled audit does: list names, then DescribeSecret each."""
    names = []
    for page in client.get_paginator("list_secrets").paginate(
        Filters=[{"Key": "name", "Values": [prefix]}]
    ):
        names.extend(entry["Name"] for entry in page["SecretList"])
    for name in names:
        client.describe_secret(SecretId=name)
    return len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args()
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(var, "testing")

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=url)
        provider = AwsProvider("aws", client, prefix="bench/")
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: provider.create(
                        f"team-{i % 10}/key-{i:05d}", SecretValue(generate_token())
                    ),
                    range(args.keys),
                )
            )
        print(f"created {args.keys} secrets in {time.perf_counter() - start:.1f}s")

        keyvault_client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=url)
        calls_kv = counted(keyvault_client)
        start = time.perf_counter()
        listed = AwsProvider("aws", keyvault_client, prefix="bench/").list_keys()
        kv_s = time.perf_counter() - start

        naive_client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=url)
        calls_naive = counted(naive_client)
        start = time.perf_counter()
        naive_count = naive_listing(naive_client, "bench/")
        naive_s = time.perf_counter() - start
        assert len(listed) == naive_count == args.keys

        kv_calls, naive_calls = sum(calls_kv.values()), sum(calls_naive.values())
        print(f"keyvault list_keys : {kv_calls:6d} calls {dict(calls_kv)}  {kv_s:.2f}s")
        print(f"naive describe loop: {naive_calls:6d} calls {dict(calls_naive)}  {naive_s:.2f}s")
        print(f"ratio: {naive_calls / kv_calls:.0f}x fewer calls, {naive_s / kv_s:.1f}x faster")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
