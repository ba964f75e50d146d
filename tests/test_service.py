"""`keyvault serve` as a real process: sweeps, /healthz, /metrics, webhooks, SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from keyvault.masterkey import keyring_from_file
from keyvault.providers.file import FileProvider
from keyvault.secret import SecretValue
from rotation.service import PROGRESS_EVERY, Service
from tests.conftest import STANDARD_CONFIG, prepare_workdir
from tests.leaks import assert_not_leaked, canary
from tests.rotation_helpers import make_kv
from tests.servers import free_port
from tests.vendor_api import VendorAPI

BASE = STANDARD_CONFIG


def setup_store(workdir: Path, extra: str = "") -> FileProvider:
    prepare_workdir(workdir, BASE + extra)
    return FileProvider("local", workdir / "store.db", keyring_from_file(workdir / "master.key"))


class Served:
    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = free_port()
        exe = str(Path(sys.executable).with_name("keyvault"))
        self.log = workdir / "serve.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            [exe, "serve", "--port", str(self.port), *args],
            cwd=workdir,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_for(self, predicate, timeout: float = 30.0) -> httpx.Response:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=2)
                if predicate(response):
                    return response
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"service not ready:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._log.close()
        return code


def test_serve_rotates_due_keys_and_reports(tmp_path: Path, vendor: VendorAPI) -> None:
    store = setup_store(
        tmp_path,
        f'\n[notify]\nwebhook = "{vendor.url}/hooks"\n\n[keys."hand/key"]\nissuer = "manual"\n',
    )
    old = canary()
    store.create("demo/key", SecretValue(old), created_at=datetime.now(UTC) - timedelta(days=100))
    store.create(
        "hand/key", SecretValue(canary()), created_at=datetime.now(UTC) - timedelta(days=100)
    )
    store.create("fresh/key", SecretValue(canary()))
    served = Served(tmp_path, "--interval", "1h")
    try:
        health = served.wait_for(lambda r: r.status_code == 200 and r.json()["sweeps"] >= 1)
        assert health.json()["last_sweep_ok"] is True
        metrics = httpx.get(f"{served.url}/metrics").text
        assert 'keyvault_rotations_total{result="rotated"} 1.0' in metrics
        assert 'keyvault_key_age_seconds{key="fresh/key",provider="local",status="ok"}' in metrics
        assert "keyvault_sweep_duration_seconds" in metrics
        assert "keyvault_last_successful_sweep_timestamp_seconds" in metrics
        assert httpx.get(f"{served.url}/nope").status_code == 404
    finally:
        assert served.stop() == 0
    keyset = store.get_keyset("demo/key")
    assert keyset.secondary is not None and keyset.secondary.secret.reveal() == old
    events = {(hook["event"], hook["key"]) for hook in vendor.state.webhooks}
    # the overdue demo key was rotated in the same sweep; the manual one stays overdue
    assert events == {
        ("rotated", "demo/key"),
        ("rotation_failed", "hand/key"),
        ("overdue", "hand/key"),
    }
    log = served.log.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any("promoted" in line["message"] for line in lines), "structured JSON logs"
    assert any(line["message"] == "keyvault serve stopped" for line in lines)
    assert_not_leaked(
        log + json.dumps(vendor.state.webhooks) + metrics,
        old,
        keyset.primary.secret.reveal(),
        where="service output",
    )


def test_sigterm_mid_sweep_exits_cleanly_with_nothing_half_done(
    tmp_path: Path, vendor: VendorAPI
) -> None:
    admin = canary("admin")
    vendor.state.admin_keys.add(admin)
    vendor.state.delay = 0.15  # every issuer call is slow, so the sweep is still running
    store = setup_store(
        tmp_path,
        f"""
[issuers.vendor]
type = "http"
create = {{ url = "{vendor.url}/admin/keys", method = "POST" }}
key_path = "data.secret"
id_path = "data.id"
admin_key = "vendor/admin"
""",
    )
    store.create("vendor/admin", SecretValue(admin))
    config = tmp_path / "keyvault.toml"
    names = [f"fleet/{i:02d}" for i in range(30)]
    config.write_text(
        config.read_text() + "".join(f'\n[keys."{n}"]\nissuer = "vendor"\n' for n in names)
    )
    for name in names:
        store.create(name, SecretValue(canary()), created_at=datetime.now(UTC) - timedelta(days=85))
    served = Served(tmp_path)
    try:
        deadline = time.monotonic() + 30
        while vendor.state.requests < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vendor.state.requests >= 3, "the sweep started"
    finally:
        code = served.stop()
    assert code == 0
    log = served.log.read_text()
    assert "signal received" in log and "stopped early" in log
    rotated = [n for n in names if store.describe(n).previous is not None]
    assert 0 < len(rotated) < len(names), "stopped part way through"
    for name in names:
        assert store.describe(name).pending is None, f"{name} left half-rotated"


def test_healthz_unhealthy_after_a_crashed_sweep(tmp_path: Path) -> None:
    from keyvault.registry import KeyVault
    from rotation.config import load_config
    from rotation.service import Service

    setup_store(tmp_path)
    kv = KeyVault(load_config(tmp_path / "keyvault.toml"))
    service = Service(kv, port=0, interval=timedelta(hours=1))

    class Broken:
        clock = staticmethod(lambda: datetime.now(UTC))

        def advance(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("bug")

        def close(self) -> None:
            pass

    service.sweep_once()
    assert service.last_sweep_ok is True
    kv.provider("local").create(
        "k", SecretValue(canary()), created_at=datetime.now(UTC) - timedelta(days=95)
    )
    service.rotator = Broken()  # type: ignore[assignment]
    service.start()
    try:
        deadline = time.monotonic() + 10
        while service.sweeps < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        response = httpx.get(f"http://127.0.0.1:{service.port}/healthz")
        assert response.status_code == 503 and response.json()["last_sweep_ok"] is False
        assert (
            "keyvault_sweeps_failed_total 1.0"
            in httpx.get(f"http://127.0.0.1:{service.port}/metrics").text
        )
    finally:
        service.stop()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    from click.testing import CliRunner

    from rotation.cli import cli

    setup_store(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["--config", str(tmp_path / "keyvault.toml"), "serve", "--port", str(port)]
        )
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_webhooks_are_signed_and_retried_after_a_500(tmp_path: Path, vendor: VendorAPI) -> None:
    """A receiver verifies the signature with the README's own function and sees the retry."""
    import re

    from rotation.engine import Outcome, Result
    from rotation.notify import Notifier

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = re.search(r"```python\n(import hashlib\n.*?)```", readme, re.S)
    assert snippet is not None
    namespace: dict[str, object] = {}
    exec(snippet.group(1), namespace)  # noqa: S102 - the README's receiver, as published
    verify = namespace["verify"]
    secret = canary("webhook")
    vendor.state.script.append((500, {}))  # the first delivery fails
    sleeps: list[float] = []
    notifier = Notifier(
        f"{vendor.url}/hooks",
        signing_secret=lambda: secret,
        retries=2,
        backoff=0.5,
        sleep=sleeps.append,
    )
    outcomes: list[str] = []
    notifier.on_delivery = outcomes.append
    notifier.outcome(Outcome("svc/key", Result.ROTATED, detail="new primary fp:1"), "local")
    assert sleeps == [0.5] and outcomes == ["delivered"]
    ((headers, body),) = vendor.state.webhook_deliveries
    headers = {k.lower(): v for k, v in headers.items()}
    assert verify(secret, headers["x-keyvault-timestamp"], body, headers["x-keyvault-signature"])
    assert not verify(
        "wrong", headers["x-keyvault-timestamp"], body, headers["x-keyvault-signature"]
    )
    assert json.loads(body)["event"] == "rotated"
    assert_not_leaked(body.decode() + str(headers), secret, where="the delivery")
    notifier.close()


def test_a_long_sweep_logs_progress_with_its_rate(
    file_provider: FileProvider, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    service = Service(make_kv(file_provider), monotonic=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="keyvault.service"):
        for done, at in ((1, 0.0), (2, 4.0), (20, PROGRESS_EVERY), (21, PROGRESS_EVERY + 1)):
            now[0] = at
            service._log_progress(done, 100)
        now[0] = 2 * PROGRESS_EVERY + 5
        service._log_progress(100, 100)  # the last key: the sweep's own summary says it
    lines = [r.getMessage() for r in caplog.records if "sweep progress" in r.getMessage()]
    assert lines == ["sweep progress: 20 of 100 keys, 2.0 keys/s"]
