"""``keyvault proxy`` as a process, with real clients: the Python Anthropic SDK, httpx
streaming, and (when Node.js and the npm packages are installed) the official Anthropic
TypeScript SDK and axios."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from keyvault.secret import fingerprint
from rotation.cli import cli
from tests.conftest import STANDARD_CONFIG
from tests.leaks import assert_not_leaked, canary
from tests.servers import free_port
from tests.vendor_api import VendorAPI

KEYVAULT = str(Path(sys.executable).with_name("keyvault"))
NODE_DIR = Path(__file__).resolve().parent / "node"


@dataclass
class Proxy:
    url: str
    admin: str
    proc: subprocess.Popen[str]
    log: Path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def put(name: str, value: str, *options: str) -> None:
    assert CliRunner().invoke(cli, ["put", name, *options], input=value).exit_code == 0


def current_value() -> str:
    return CliRunner().invoke(cli, ["get", "anthropic/prod", "--reveal"]).stdout.strip()


def issuer_config(vendor: VendorAPI) -> str:
    """An issuing admin API on the vendor, so rotations make keys the vendor accepts."""
    admin = canary("admin")
    vendor.state.admin_keys.add(admin)
    put("vendor/admin", admin)
    return vendor.issuer_toml("anthropic/prod")


def launch(
    workdir: Path,
    upstream: str,
    *,
    extra: str = "",
    listen: str | None = None,
    inbound: str | None = None,
) -> Proxy:
    """Write [proxy.claude] and start `keyvault proxy`; returns once it answers /healthz
    (or has exited: a refused config)."""
    listen = listen or f"127.0.0.1:{free_port()}"
    admin = f"127.0.0.1:{free_port()}"
    route = (
        f'\n[proxy.claude]\nkey = "anthropic/prod"\nupstream = "{upstream}"\nlisten = "{listen}"\n'
    )
    if inbound is not None:
        route += f'inbound_token = "{inbound}"\n'
    (workdir / "keyvault.toml").write_text(STANDARD_CONFIG + extra + route)
    log = workdir / "proxy.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    proc = subprocess.Popen(
        [KEYVAULT, "proxy", "--admin", admin],
        cwd=workdir,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    proxy = Proxy(f"http://{listen}", f"http://{admin}", proc, log)
    deadline = time.monotonic() + 30
    while proc.poll() is None:
        try:
            if httpx.get(f"{proxy.admin}/healthz", timeout=1).status_code == 200:
                return proxy
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"proxy did not start: {log.read_text()[-2000:]}"
        time.sleep(0.05)
    return proxy


@pytest.fixture
def proxied(workdir: Path, vendor: VendorAPI) -> Iterator[tuple[Proxy, str]]:
    raw = canary()
    put("anthropic/prod", raw, "--ref", vendor.state.add_key(raw))  # revocable by its id
    proxy = launch(workdir, vendor.url, extra=issuer_config(vendor))
    yield proxy, raw
    proxy.stop()


def test_the_python_sdk_through_the_proxy_sends_the_real_key(
    proxied: tuple[Proxy, str], vendor: VendorAPI
) -> None:
    import anthropic

    proxy, raw = proxied
    app_key = canary("app")
    claude = anthropic.Anthropic(base_url=proxy.url, api_key=app_key, max_retries=0)
    message = claude.messages.create(
        model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "ok"
    assert vendor.state.seen[-1] == fingerprint(raw)
    assert fingerprint(app_key) not in vendor.state.seen  # the app's credential is stripped
    assert httpx.get(f"{proxy.admin}/healthz").json()["routes"] == ["claude"]
    metrics = httpx.get(f"{proxy.admin}/metrics").text
    assert f'fingerprint="{fingerprint(raw)}"' in metrics
    assert proxy.stop() == 0  # SIGTERM: drained, exit 0
    log = proxy.log.read_text()
    assert_not_leaked(log + metrics, raw, app_key, where="the proxy's log and metrics")
    assert "claude POST /v1/messages -> 200" in log


def test_the_proxy_answers_a_repeated_request_from_the_response_cache(
    workdir: Path, vendor: VendorAPI
) -> None:
    """The proxy's upstream client is the key's async client, so it inherits the response
    cache: an app in any language gets the hit, marked in ``x-keyvault-cache``."""
    raw = canary()
    put("anthropic/prod", raw)
    vendor.state.add_key(raw)
    cache = '\n[client.response_cache]\npaths = ["/v1/messages"]\n'
    proxy = launch(workdir, vendor.url, extra=cache)
    try:
        body = {
            "model": "claude-test",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}],
        }
        first = httpx.post(f"{proxy.url}/v1/messages", json=body, timeout=10)
        second = httpx.post(f"{proxy.url}/v1/messages", json=body, timeout=10)
        streamed = httpx.post(f"{proxy.url}/v1/messages", json={**body, "stream": True}, timeout=10)
    finally:
        assert proxy.stop() == 0
    assert (first.headers["x-keyvault-cache"], second.headers["x-keyvault-cache"]) == (
        "miss",
        "hit",
    )
    assert first.json() == second.json() and first.json()["content"][0]["text"] == "ok"
    assert "x-keyvault-cache" not in streamed.headers and "event:" in streamed.text
    assert vendor.state.requests == 2  # the first and the streamed one


def test_a_stream_reaches_the_app_event_by_event(
    proxied: tuple[Proxy, str], vendor: VendorAPI
) -> None:
    proxy, _ = proxied
    vendor.state.stream_gap = 0.2
    body = {"model": "claude-test", "max_tokens": 16, "stream": True, "messages": []}
    with httpx.stream("POST", f"{proxy.url}/v1/messages", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        assert json.loads(first[5:])["type"] == "message_start"
        assert not vendor.state.stream_done.is_set(), "the first event waited for the last"
        rest = [line for line in lines if line.startswith("data:")]
    assert json.loads(rest[-1][5:])["type"] == "message_stop"


def test_zero_failed_requests_through_rotations_with_the_old_key_revoked_at_once(
    proxied: tuple[Proxy, str], vendor: VendorAPI
) -> None:
    proxy, _ = proxied
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=proxy.url, timeout=30) as client:
            while not stop.is_set():
                statuses.append(client.get("/v1/models").status_code)

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(3):
            old, before = current_value(), len(statuses)
            rotated = CliRunner().invoke(cli, ["rotate", "anthropic/prod", "--force"])
            assert rotated.exit_code == 0, rotated.output
            vendor.state.revoke(old)  # the vendor drops the old key at once
            deadline = time.monotonic() + 30
            while len(statuses) < before + 20:  # traffic on, measured in requests
                assert time.monotonic() < deadline, "traffic stalled"
                time.sleep(0.01)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert set(statuses) == {200}, f"failed: {sum(s != 200 for s in statuses)}"


def test_beyond_loopback_needs_an_inbound_token(workdir: Path, vendor: VendorAPI) -> None:
    put("anthropic/prod", canary())
    refused = launch(workdir, vendor.url, listen=f"0.0.0.0:{free_port()}")
    assert refused.proc.wait(30) == 2
    assert "inbound_token" in refused.log.read_text()


def test_an_inbound_token_is_checked(workdir: Path, vendor: VendorAPI) -> None:
    raw, token = canary(), canary("inbound")
    vendor.state.add_key(raw)
    put("anthropic/prod", raw)
    put("proxy/inbound", token)
    proxy = launch(workdir, vendor.url, inbound="proxy/inbound")
    try:
        assert httpx.get(f"{proxy.url}/v1/models").status_code == 401
        wrong = httpx.get(f"{proxy.url}/v1/models", headers={"x-api-key": "wrong"})
        assert wrong.status_code == 401
        right = httpx.get(f"{proxy.url}/v1/models", headers={"x-api-key": token})
        assert right.status_code == 200
        assert vendor.state.seen[-1] == fingerprint(raw)
        assert fingerprint(token) not in vendor.state.seen
    finally:
        assert proxy.stop() == 0


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules").exists(),
    reason="Node.js or the npm packages (scripts/install-test-tools) are not installed",
)
def test_node_clients_through_the_proxy_across_a_rotation(
    proxied: tuple[Proxy, str], vendor: VendorAPI, workdir: Path
) -> None:
    """The official Anthropic TypeScript SDK and axios, as a Node.js app would use them."""
    proxy, _ = proxied
    old = current_value()
    node = subprocess.Popen(
        ["node", str(NODE_DIR / "clients.mjs"), proxy.url, "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while vendor.state.requests < 6:  # the clients are under way: rotate beneath them
        assert node.poll() is None and time.monotonic() < deadline, node.stderr
        time.sleep(0.02)
    rotated = CliRunner().invoke(cli, ["rotate", "anthropic/prod", "--force"])
    assert rotated.exit_code == 0, rotated.output
    vendor.state.revoke(old)
    out, err = node.communicate(timeout=120)
    assert node.returncode == 0, err
    result = json.loads(out)
    assert result == {"sdk": 20, "axios": 20, "failed": 0, "errors": []}


def test_sigterm_drains_a_stream_in_flight_then_exits_0(
    proxied: tuple[Proxy, str], vendor: VendorAPI
) -> None:
    proxy, _ = proxied
    vendor.state.stream_gap = 0.3  # about 3 s of events
    body = {"model": "claude-test", "max_tokens": 16, "stream": True, "messages": []}
    with httpx.stream("POST", f"{proxy.url}/v1/messages", json=body, timeout=30) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data:"))
        proxy.proc.send_signal(signal.SIGTERM)  # mid-stream
        rest = [json.loads(line[5:])["type"] for line in lines if line.startswith("data:")]
    assert rest[-1] == "message_stop", "the answer in flight was finished, not cut"
    assert proxy.proc.wait(30) == 0


def test_listening_sockets_turn_nagle_off() -> None:
    """asyncio disables Nagle only on sockets created as TCP; without it every response on
    a kept-alive connection waited ~40 ms for the client's delayed ACK."""
    import socket

    from keyvault.proxy.server import Listener, bind

    sock = bind(Listener("test", "127.0.0.1", 0))
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()
