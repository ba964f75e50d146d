"""Requests per second and added p50 latency through `keyvault proxy`, against the same
upstream called directly, in one run.

The upstream is a trivially fast ASGI app under uvicorn on loopback (one small JSON answer):
the worst case for a proxy, whose own cost is then all there is to see. One client thread,
keep-alive, the same number of requests both ways, after a warm-up.

    python benchmarks/proxy.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
KEYVAULT = str(Path(sys.executable).with_name("keyvault"))
BODY = b'{"data":[{"id":"claude-test","type":"model"}]}'


async def upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_upstream(port: int) -> uvicorn.Server:
    server = uvicorn.Server(
        uvicorn.Config(upstream, port=port, log_level="error", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server


def measure(url: str, requests: int) -> tuple[float, float]:
    """(requests per second, p50 latency in ms) for ``requests`` GETs after a warm-up."""
    with httpx.Client(base_url=url, headers={"x-api-key": "unused"}) as client:
        for _ in range(50):
            client.get("/v1/models").raise_for_status()
        latencies = []
        started = time.perf_counter()
        for _ in range(requests):
            t0 = time.perf_counter()
            client.get("/v1/models").raise_for_status()
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    return requests / elapsed, statistics.median(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    upstream_port, proxy_port, admin_port = free_port(), free_port(), free_port()
    server = start_upstream(upstream_port)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
        subprocess.run([KEYVAULT, "init"], cwd=work, env=env, check=True, capture_output=True)
        subprocess.run(
            [KEYVAULT, "put", "bench/key", "--generate"],
            cwd=work,
            env=env,
            check=True,
            capture_output=True,
        )
        with (work / "keyvault.toml").open("a") as config:
            config.write(
                f'\n[proxy.bench]\nkey = "bench/key"\nupstream = "http://127.0.0.1:{upstream_port}"\n'
                f'listen = "127.0.0.1:{proxy_port}"\n'
            )
        proxy = subprocess.Popen(
            [KEYVAULT, "proxy", "--admin", f"127.0.0.1:{admin_port}"],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{admin_port}/healthz").raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            direct_rps, direct_p50 = measure(f"http://127.0.0.1:{upstream_port}", args.requests)
            proxied_rps, proxied_p50 = measure(f"http://127.0.0.1:{proxy_port}", args.requests)
        finally:
            proxy.terminate()
            proxy.wait(30)
    server.should_exit = True
    print(f"direct:        {direct_rps:8.0f} req/s   p50 {direct_p50:6.2f} ms")
    print(f"through proxy: {proxied_rps:8.0f} req/s   p50 {proxied_p50:6.2f} ms")
    print(
        f"ratio: {proxied_rps / direct_rps:.2f}x the direct throughput, "
        f"+{proxied_p50 - direct_p50:.2f} ms added p50 latency"
    )


if __name__ == "__main__":
    main()
