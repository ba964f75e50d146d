"""A fleet audit: N keys in the file store, every audit format and `list --format json`,
each timed and its peak memory measured in a process of its own.

    python benchmarks/fleet.py [--keys 100000]

Prints seconds and peak RSS per command, and the goals (<= 5 s, <= 150 MB) beside them.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from keyvault.providers import build_provider
from keyvault.providers.file import FileProvider
from keyvault.secret import SecretValue
from rotation.config import load_config

KEYVAULT = str(Path(sys.executable).with_name("keyvault"))
COMMANDS = [
    ("audit table (piped)", ["audit", "--format", "table"]),
    ("audit json", ["audit", "--format", "json"]),
    ("audit csv", ["audit", "--format", "csv"]),
    ("audit markdown", ["audit", "--format", "markdown"]),
    ("audit html", ["audit", "--format", "html"]),
    ("list json", ["list", "--format", "json"]),
]


def seed(work: Path, count: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    subprocess.run([KEYVAULT, "init"], cwd=work, env=env, check=True, capture_output=True)
    store = build_provider(load_config(work / "keyvault.toml"), "local")
    assert isinstance(store, FileProvider)
    now = datetime.now(UTC)
    rng = random.Random(7)
    store.create_many(
        (
            f"fleet/team{i % 100:02d}/key{i:06d}",
            SecretValue(f"bench-value-{i:08d}-{rng.getrandbits(64):016x}"),
            now - timedelta(days=rng.uniform(0, 120)),
            "prod" if i % 3 else "dev",
        )
        for i in range(count)
    )
    store.close()


def measure(work: Path, args: list[str]) -> tuple[float, float]:
    """Seconds and peak resident MB of one keyvault command (GNU time)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", KEYVAULT, *args],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed = time.perf_counter() - started
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    return elapsed, peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        seed(work, args.keys)
        print(f"seeded {args.keys} keys in {time.perf_counter() - started:.1f}s")
        for label, command in COMMANDS:
            seconds, megabytes = measure(work, command)
            print(f"{label:22s} {seconds:7.2f} s  {megabytes:7.1f} MB   (goal <= 5 s, <= 150 MB)")


if __name__ == "__main__":
    main()
