"""Sweeping a fleet of due keys: AWS under its shared write quota, OpenBao in parallel.

    python benchmarks/sweep.py [--keys 1000] [--aws-keys 1000] [--concurrency 4]

AWS (moto in-process, with a shim that answers ThrottlingException above 50 writes/s, the
quota PutSecretValue, UpdateSecretVersionStage and UpdateSecret share per account and
region): one sweep paced by the provider's ``write_rate`` (default 40/s). Prints keys/s,
writes per key, failed keys and throttled calls - the goal is zero of both.

OpenBao (a dev server on loopback, then behind ``--rtt-ms`` of added round trip): the same
sweep one key at a time and ``--concurrency`` keys at once, keys/s for each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hvac
from moto import mock_aws

from benchmarks.latency_proxy import LatencyProxy
from keyvault.providers.aws import AwsProvider
from keyvault.providers.base import KeyProvider
from keyvault.providers.vault import VaultProvider
from keyvault.secret import SecretValue
from rotation.plan import Result
from rotation.sweep import SweepReport, sweep
from rotation.tokens import generate_token
from tests.conftest import Clock
from tests.fixtures_aws import aws_clients, emulate_put_idempotency, throttle_writes
from tests.rotation_helpers import RecordingIssuer, make_kv, make_rotator, now_clock
from tests.servers import BaoServer

WRITES = ("PutSecretValue", "UpdateSecretVersionStage", "UpdateSecret")


def create_due(provider: KeyProvider, names: list[str], clock: Clock) -> None:
    old = clock.now - timedelta(days=95)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda n: provider.create(n, SecretValue(generate_token()), created_at=old),
                names,
            )
        )


def run_sweep(provider: KeyProvider, clock: Clock, concurrency: int) -> SweepReport:
    kv = make_kv(provider)
    return sweep(kv, make_rotator(kv, RecordingIssuer(), clock), concurrency=concurrency)


def line(label: str, report: SweepReport, keys: int) -> str:
    return (
        f"  {label:<22}: {report.rate:8.1f} keys/s  ({report.seconds:.1f}s, "
        f"{report.count(Result.ROTATED)}/{keys} rotated, {report.count(Result.FAILED)} failed)"
    )


def aws(keys: int, concurrency: int, write_rate: float) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(var, "testing")
    with mock_aws():
        secrets, kms = aws_clients()
        emulate_put_idempotency(secrets)
        key_id = kms.create_key(Description="sweep benchmark")["KeyMetadata"]["KeyId"]
        prefix = f"sweep-{uuid.uuid4().hex[:6]}/"

        def provider(rate: float | None) -> AwsProvider:
            return AwsProvider(
                "aws",
                secrets,
                kms_client=kms,
                kms_key_id=key_id,
                prefix=prefix,
                recovery_window_days=0,
                write_rate=rate,
            )

        clock = now_clock()
        create_due(provider(None), [f"fleet/k{i:05d}" for i in range(keys)], clock)
        writes: Counter[str] = Counter()
        secrets.meta.events.register(
            "before-call.secrets-manager.*",
            lambda event_name, **_: writes.update([event_name.rsplit(".", 1)[-1]]),
        )
        throttled = throttle_writes(secrets, per_second=50)
        report = run_sweep(provider(write_rate), clock, concurrency)
        total_writes = sum(writes[op] for op in WRITES)
        print(f"[aws, moto with a 50 writes/s quota, write_rate {write_rate:g}]")
        print(line(f"{concurrency} keys at once", report, keys))
        print(
            f"  writes per key        : {total_writes / max(1, keys):.1f}  "
            f"({total_writes / report.seconds:.1f} writes/s)"
        )
        print(f"  quota writes          : {dict((op, writes[op]) for op in WRITES)}")
        print(f"  throttled calls       : {len(throttled)}")


def bao(keys: int, concurrency: int, rtt_ms: float) -> None:
    server = BaoServer().start()
    try:
        clock = now_clock()
        names = [f"fleet/k{i:05d}" for i in range(keys)]
        with LatencyProxy(server.port, rtt_ms / 1000) as proxy:
            for label, url in (
                ("loopback", server.url),
                (f"+{rtt_ms:g} ms RTT", f"http://127.0.0.1:{proxy.port}"),
            ):
                reports: dict[int, SweepReport] = {}
                for workers in (1, concurrency):
                    store = VaultProvider(
                        "bao",
                        hvac.Client(url=url),
                        prefix=f"sweep-{uuid.uuid4().hex[:6]}/",
                        environ={"VAULT_TOKEN": server.root_token},
                    )
                    create_due(store, names, clock)
                    reports[workers] = run_sweep(store, clock, workers)
                print(f"[openbao, {label}]")
                print(line("one key at a time", reports[1], keys))
                print(line(f"{concurrency} keys at once", reports[concurrency], keys))
                ratio = reports[concurrency].rate / reports[1].rate
                print(f"  ratio                 : {ratio:.2f}x")
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1000, help="OpenBao keys")
    parser.add_argument("--aws-keys", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--write-rate", type=float, default=40.0)
    parser.add_argument("--rtt-ms", type=float, default=2.0, help="added round trip to OpenBao")
    args: Any = parser.parse_args()
    start = time.perf_counter()
    bao(args.keys, args.concurrency, args.rtt_ms)
    aws(args.aws_keys, max(args.concurrency, 8), args.write_rate)
    print(f"(benchmark took {time.perf_counter() - start:.0f}s)")


if __name__ == "__main__":
    main()
