"""Cold start: what a process pays before its first request through keyvault.

    python benchmarks/cold_start.py [--runs 9]

Each program runs in a fresh interpreter from compiled bytecode (after one warm-up run);
the best of ``--runs`` CPU times (user + system, which a busy machine inflates less than
wall time) and its peak RSS are compared with the
same for plain httpx, measured in the same run:

- ``import httpx`` alone (the issue's baseline), and
- ``import httpx`` plus a first ``httpx.Client`` (what an app pays for its first client
  without keyvault: the client's SSL context alone is ~20 ms);
- ``import keyvault`` and a first ``kv.client(...)`` on the embedded file store (config
  found and validated, store opened, the key read and decrypted, the client built);
- ``keyvault --help`` and ``keyvault get`` (the CLI's floor, paid on every command).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

KEYVAULT = str(Path(sys.executable).with_name("keyvault"))
MEASURE = (
    "\nimport resource\nusage = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print(usage.ru_utime + usage.ru_stime, usage.ru_maxrss)"
)
FIRST_CLIENT = (
    "import keyvault\nkv = keyvault.load('keyvault.toml')\n"
    "client = kv.client('bench/key', base_url='http://127.0.0.1:1')\n"
    "client.build_request('GET', '/')"
)
PROGRAMS = {
    "import httpx": "import httpx",
    "import httpx + first Client": (
        "import httpx\nclient = httpx.Client(base_url='http://127.0.0.1:1')\n"
        "client.build_request('GET', '/')"
    ),
    "import keyvault + first kv.client": FIRST_CLIENT,
    # an app installed without the `service` extra has no prometheus_client to import
    "  the same, no prometheus_client": (
        "import sys\nsys.modules['prometheus_client'] = None\n" + FIRST_CLIENT
    ),
}
CLI = {
    "keyvault --help": ["--help"],
    "keyvault get bench/key": ["get", "bench/key"],
}


#: bytecode caches live here for the run: every program runs from compiled bytecode, as
#: after a `pip install` (which compiles), even where PYTHONDONTWRITEBYTECODE is set or the
#: checkout is read-only
PYCACHE = tempfile.mkdtemp(prefix="keyvault-bench-pycache-")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, "PYTHONPYCACHEPREFIX": PYCACHE}


def best_of(command: list[str], work: Path, runs: int) -> tuple[float, float]:
    """The lowest CPU seconds and the peak MB of ``command`` over ``runs`` runs."""
    best, peak = float("inf"), 0.0
    subprocess.run(command, cwd=work, env=clean_env(), capture_output=True, check=True)  # compiles
    for _ in range(runs):
        done = subprocess.run(
            command, cwd=work, env=clean_env(), capture_output=True, text=True, check=True
        )
        cpu, rss_kb = done.stdout.split()[-2:]
        best = min(best, float(cpu))
        peak = max(peak, int(rss_kb) / 1024)
    return best, peak


def cli_program(args: list[str]) -> str:
    """The CLI run in-process with its usage measured the same way (its exit is caught)."""
    return (
        "import sys\nsys.argv = ['keyvault', *" + repr(args) + "]\n"
        "from rotation.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stdout = sys.__stdout__" + MEASURE
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [KEYVAULT, "init"], cwd=work, env=clean_env(), check=True, capture_output=True
        )
        subprocess.run(
            [KEYVAULT, "put", "bench/key"],
            input="bench-cold-start-value-0123456789",
            cwd=work,
            env=clean_env(),
            check=True,
            capture_output=True,
            text=True,
        )
        results = {
            label: best_of([sys.executable, "-c", code + MEASURE], work, args.runs)
            for label, code in PROGRAMS.items()
        }
        for label, cli_args in CLI.items():
            results[label] = best_of([sys.executable, "-c", cli_program(cli_args)], work, args.runs)
    plain_cpu, _ = results["import httpx"]
    client_cpu, client_mb = results["import httpx + first Client"]
    print(
        f"{'program':38} {'CPU ms':>8} {'peak MB':>8} {'vs import httpx':>16} {'vs + Client':>12}"
    )
    for label, (cpu, mb) in results.items():
        print(
            f"{label:38} {cpu * 1000:8.1f} {mb:8.1f} {cpu / plain_cpu:15.2f}x "
            f"{cpu / client_cpu:11.2f}x"
        )
    kv_cpu, kv_mb = results["import keyvault + first kv.client"]
    print(
        f"\nkeyvault's first client: {kv_cpu / client_cpu:.2f}x the CPU of plain httpx's first "
        f"client, +{kv_mb - client_mb:.1f} MB peak memory "
        f"(goal <= 1.3x, <= +15 MB); {kv_cpu / plain_cpu:.2f}x a bare `import httpx`"
    )


if __name__ == "__main__":
    main()
