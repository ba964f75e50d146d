"""Each benchmark script runs end to end on a small input and prints its ratios.

Timing is never asserted: only that the script works and reports what it promises.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        (
            "vault_listing.py",
            ["--keys", "20", "--rtt-ms", "1"],
            ["one by one", "concurrent", "ratio"],
        ),
        (
            "client.py",
            ["--requests", "50", "--rounds", "1"],
            [
                "ratio",
                "aws-secretsmanager-caching",
                "kv.async_anthropic",
                "keyvault adds",
                "limiter",
            ],
        ),
        ("audit.py", ["--keys", "20"], ["keys/s", "backend calls per key"]),
        ("proxy.py", ["--requests", "50"], ["direct", "through proxy", "ratio"]),
        (
            "aws_listing.py",
            ["--keys", "30"],
            ["keyvault list_keys", "naive describe loop", "ratio"],
        ),
        (
            "sweep.py",
            ["--keys", "12", "--aws-keys", "12", "--rtt-ms", "1"],
            ["one key at a time", "keys at once", "ratio", "throttled calls       : 0"],
        ),
        ("fleet.py", ["--keys", "300"], ["audit json", "goal"]),
        ("cold_start.py", ["--runs", "1"], ["first kv.client", "vs import httpx", "goal"]),
        ("response_cache.py", ["--requests", "20", "--rounds", "1"], ["memory cache", "cache hit"]),
    ],
)
def test_benchmark_runs(script: str, args: list[str], expected: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for word in expected:
        assert word in result.stdout
    assert "Traceback" not in result.stderr
