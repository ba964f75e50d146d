"""rotate, stage and rekey as a user runs them, on a real file store; two processes at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from keyvault.crypto import Keyring, MasterKey
from keyvault.errors import IntegrityError
from keyvault.masterkey import keyring_from_file
from keyvault.providers.file import FileProvider
from keyvault.secret import SecretValue
from rotation.cli import cli
from rotation.config import load_config
from tests.conftest import STANDARD_CONFIG
from tests.leaks import assert_not_leaked, canary
from tests.vendor_api import VendorAPI

CONFIG = STANDARD_CONFIG


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def iso_days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


def store(workdir: Path) -> FileProvider:
    return FileProvider("local", workdir / "store.db", keyring_from_file(workdir / "master.key"))


def test_rotate_named_key(workdir: Path) -> None:
    old = canary()
    assert run("put", "svc/a", "--created-at", iso_days_ago(85), input=old).exit_code == 0
    result = run("rotate", "svc/a", "--format", "json")
    assert result.exit_code == 0, result.output
    (outcome,) = json.loads(result.stdout)
    assert outcome["result"] == "rotated"
    assert outcome["steps"] == ["create", "test", "promote"]
    keyset = store(workdir).get_keyset("svc/a")
    assert keyset.secondary is not None and keyset.secondary.secret.reveal() == old
    assert_not_leaked(result.output, old, keyset.primary.secret.reveal(), where="rotate output")


def test_rotate_all_only_touches_due_keys_and_force_rotates_everything(workdir: Path) -> None:
    run("put", "due/a", "--created-at", iso_days_ago(85), input=canary())
    run("put", "fresh/b", "--created-at", iso_days_ago(5), input=canary())
    result = run("rotate", "--all", "--format", "json")
    assert result.exit_code == 0, result.output
    assert {o["key"]: o["result"] for o in json.loads(result.stdout)} == {"due/a": "rotated"}
    forced = run("rotate", "--all", "--force", "--format", "json")
    results = {o["key"]: o["result"] for o in json.loads(forced.stdout)}
    assert results == {"due/a": "rotated", "fresh/b": "rotated"}


def test_dry_run_changes_nothing(workdir: Path) -> None:
    run("put", "due/a", "--created-at", iso_days_ago(85), input=canary())
    before = store(workdir).describe("due/a")
    result = run("rotate", "--all", "--dry-run")
    assert result.exit_code == 0
    assert "dry run" in result.stdout and "planned" in result.stdout
    assert store(workdir).describe("due/a") == before


def test_rotate_usage_and_not_found(workdir: Path) -> None:
    assert run("rotate").exit_code == 2
    assert run("rotate", "a", "--all").exit_code == 2
    missing = run("rotate", "no/such")
    assert missing.exit_code == 3 and "not found" in missing.stdout


def test_window_closed_is_waiting_unless_forced(workdir: Path) -> None:
    tomorrow = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[
        (datetime.now(UTC).weekday() + 1) % 7
    ]
    config = workdir / "keyvault.toml"
    config.write_text(config.read_text() + f'window = {{ days = "{tomorrow}" }}\n')
    run("put", "due/a", "--created-at", iso_days_ago(95), input=canary())
    waiting = run("rotate", "due/a", "--format", "json")
    assert json.loads(waiting.stdout)[0]["result"] == "waiting"
    forced = run("rotate", "due/a", "--force", "--format", "json")
    assert json.loads(forced.stdout)[0]["result"] == "rotated"


def test_stage_for_a_manual_key(workdir: Path) -> None:
    config = workdir / "keyvault.toml"
    config.write_text(config.read_text() + '\n[keys."vendor/key"]\nissuer = "manual"\n')
    run("put", "vendor/key", "--created-at", iso_days_ago(95), input=canary())
    needs = run("rotate", "vendor/key", "--format", "json")
    assert needs.exit_code == 1
    assert json.loads(needs.stdout)[0]["result"] == "needs-staging"
    staged_value = canary()
    staged = run("stage", "vendor/key", input=staged_value)
    assert staged.exit_code == 0 and "staged fp:" in staged.stdout
    again = run("stage", "vendor/key", input=canary())
    assert again.exit_code == 7 and "--replace" in again.stderr
    replacement = canary()
    assert run("stage", "vendor/key", "--replace", input=replacement).exit_code == 0
    rotated = run("rotate", "vendor/key", "--format", "json")
    assert json.loads(rotated.stdout)[0]["result"] == "rotated"
    assert store(workdir).get_keyset("vendor/key").primary.secret.reveal() == replacement
    for result in (staged, again, rotated):
        assert_not_leaked(result.output, staged_value, replacement, where="stage output")


def test_issuer_down_exit_code_and_nothing_changes(workdir: Path) -> None:
    config = workdir / "keyvault.toml"
    config.write_text(
        config.read_text()
        + """
[issuers.vendor]
type = "http"
create = { url = "http://127.0.0.1:9/admin/keys", method = "POST" }

[keys."svc/http"]
issuer = "vendor"
"""
    )
    run("put", "svc/http", "--created-at", iso_days_ago(85), input=canary())
    before = store(workdir).describe("svc/http")
    result = run("rotate", "svc/http", "--format", "json")
    assert result.exit_code == 5
    (outcome,) = json.loads(result.stdout)
    assert outcome["result"] == "failed" and outcome["failed_step"] == "create"
    assert store(workdir).describe("svc/http") == before


def test_read_only_env_key(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = workdir / "keyvault.toml"
    config.write_text(config.read_text() + '\n[providers.ci]\ntype = "env"\nkeys = ["ci/token"]\n')
    monkeypatch.setenv("CI_TOKEN", canary())
    result = run("rotate", "--all", "--force", "--format", "json")
    assert result.exit_code == 0
    assert "ci/token" not in {o["key"] for o in json.loads(result.stdout)}
    named = run("rotate", "ci/token", "--format", "json")
    assert json.loads(named.stdout)[0]["result"] == "read-only"


# -- rekey ------------------------------------------------------------


def test_rekey_reencrypts_and_retires_the_old_master_key(workdir: Path) -> None:
    values = {f"k/{i}": canary() for i in range(5)}
    for name, value in values.items():
        run("put", name, input=value)
    run("rotate", "k/0", "--force")  # a secondary too: six live values
    old_ring = keyring_from_file(workdir / "master.key")
    result = run("rekey")
    assert result.exit_code == 0, result.output
    assert "re-encrypted" in result.stdout
    new_ring = keyring_from_file(workdir / "master.key")
    assert len(new_ring.keys) == 1 and new_ring.primary.key_id != old_ring.primary.key_id
    provider = store(workdir)
    assert provider.sealed_with() == {new_ring.primary.key_id: 6}
    for name, value in list(values.items())[1:]:
        assert provider.get_keyset(name).primary.secret.reveal() == value
    assert provider.get_keyset("k/0").secondary is not None
    with pytest.raises(IntegrityError, match="wrong master key"):
        FileProvider("local", workdir / "store.db", old_ring)


class SimulatedCrash(BaseException):
    """Not an Exception: nothing in keyvault may catch it, like a process being killed."""


def test_rekey_resumes_after_an_interruption(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {f"k/{i:03d}": canary() for i in range(250)}
    provider = store(workdir)
    for name, value in values.items():
        provider.create(name, SecretValue(value))
    provider.close()
    old_id = keyring_from_file(workdir / "master.key").primary.key_id

    calls = [0]
    real_seal = Keyring.seal

    def dies_mid_way(self: Keyring, plaintext: bytes, aad: bytes) -> Any:
        calls[0] += 1
        if calls[0] > 150:  # the second batch of 100 never commits
            raise SimulatedCrash
        return real_seal(self, plaintext, aad)

    monkeypatch.setattr(Keyring, "seal", dies_mid_way)
    with pytest.raises(SimulatedCrash):
        CliRunner().invoke(cli, ["rekey"], catch_exceptions=False)
    monkeypatch.setattr(Keyring, "seal", real_seal)

    ring = keyring_from_file(workdir / "master.key")
    assert len(ring.keys) == 2 and ring.keys[1].key_id == old_id, "new key first, old kept"
    half = FileProvider("local", workdir / "store.db", ring)
    assert half.sealed_with() == {ring.primary.key_id: 100, old_id: 150}
    half.close()

    result = run("rekey")
    assert result.exit_code == 0, result.output
    assert "150 values re-encrypted" in result.stdout
    final = keyring_from_file(workdir / "master.key")
    assert [k.key_id for k in final.keys] == [ring.primary.key_id]
    provider = store(workdir)
    for name, value in values.items():
        assert provider.get_keyset(name).primary.secret.reveal() == value


def test_rekey_with_env_master_key_explains(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = workdir / "keyvault.toml"
    config.write_text(
        config.read_text()
        .replace('master_key_file = "master.key"', 'master_key_env = "KV_MK"')
        .replace('"store.db"', '"env.db"')
    )
    old, new = MasterKey.generate(), MasterKey.generate()
    monkeypatch.setenv("KV_MK", old.to_base64())
    value = canary()
    assert run("--config", "keyvault.toml", "init").exit_code == 0
    run("put", "a", input=value)
    refused = run("rekey")
    assert refused.exit_code == 2 and "NEW,OLD" in refused.stderr
    monkeypatch.setenv("KV_MK", f"{new.to_base64()},{old.to_base64()}")
    done = run("rekey")
    assert done.exit_code == 0 and "set $KV_MK to the new key alone" in done.stdout
    monkeypatch.setenv("KV_MK", new.to_base64())
    assert run("get", "a", "--reveal").stdout == value + "\n"


# -- two processes ------------------------------------------------------------


def test_two_rotation_processes_make_exactly_one_promotion_per_key(workdir: Path) -> None:
    provider = store(workdir)
    for i in range(20):
        provider.create(
            f"fleet/{i:02d}",
            SecretValue(canary()),
            created_at=datetime.now(UTC) - timedelta(days=85),
        )
    exe = str(Path(sys.executable).with_name("keyvault"))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    procs = [
        subprocess.Popen(
            [exe, "rotate", "--all", "--format", "json"],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs: list[Any] = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-500:] for _, err in outputs]
    assert provider.promotions() == 20
    results = [o["result"] for out, _ in outputs for o in json.loads(out)]
    assert results.count("rotated") == 20
    assert set(results) <= {"rotated", "conflict", "unchanged"}
    for i in range(20):
        info = provider.describe(f"fleet/{i:02d}")
        assert info.pending is None and info.previous is not None


# -- rotation under live traffic ------------------------------------------------------------


def test_zero_failed_requests_through_five_forced_rotations_with_retire(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from keyvault.registry import KeyVault
    from rotation.engine import Result, Rotator
    from tests.conftest import Clock

    vendor = VendorAPI().start()
    try:
        admin = canary("admin")
        vendor.state.admin_keys.add(admin)
        config = workdir / "keyvault.toml"
        config.write_text(
            config.read_text() + '\n[client]\ncache_ttl = "1s"\n' + vendor.issuer_toml("vendor/api")
        )
        first = canary("first")
        first_id = vendor.state.add_key(first)
        provider = store(workdir)
        provider.create("vendor/admin", SecretValue(admin))
        provider.create("vendor/api", SecretValue(first), ref=first_id)
        kv = KeyVault(load_config(config))
        client = kv.client("vendor/api", base_url=vendor.url, header="x-api-key")
        stop = threading.Event()
        statuses: list[int] = []

        def traffic() -> None:
            while not stop.is_set():
                statuses.append(client.get("/v1/models").status_code)

        workers = [threading.Thread(target=traffic, daemon=True) for _ in range(3)]
        for worker in workers:
            worker.start()
        clock = Clock(datetime.now(UTC))
        ring = keyring_from_file(workdir / "master.key")
        rotation_store = FileProvider("local", workdir / "store.db", ring, clock=clock)
        rotator = Rotator(
            KeyVault(load_config(config), providers={"local": rotation_store}), clock=clock
        )

        def more_requests(count: int = 10) -> None:
            """Let traffic run on after a step: a count of requests, not a time."""
            target = len(statuses) + count
            deadline = time.monotonic() + 30
            while len(statuses) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(statuses) >= target, "traffic stalled"

        try:
            for _ in range(5):
                outcome = rotator.advance("vendor/api", force=True)
                assert outcome.result == Result.ROTATED, outcome.detail
                more_requests()  # traffic runs on the new key and the cached old one
                clock.advance(timedelta(days=8))
                retired = rotator.advance("vendor/api")
                assert retired.result == Result.RETIRED, retired.detail
                more_requests()
        finally:
            stop.set()
            for worker in workers:
                worker.join(10)
        assert set(statuses) == {200}, f"failed requests: {len([s for s in statuses if s != 200])}"
        revoked = [k for k in vendor.state.keys.values() if k["status"] == "inactive"]
        assert len(revoked) == 5, "every retired key was revoked at the vendor"
    finally:
        vendor.stop()


def test_rollback_restores_the_previous_key_and_the_sweep_leaves_it(
    workdir: Path, vendor: VendorAPI
) -> None:
    admin = canary("admin")
    vendor.state.admin_keys.add(admin)
    run("put", "vendor/admin", input=admin)
    config = workdir / "keyvault.toml"
    config.write_text(config.read_text() + vendor.issuer_toml("svc/key"))
    old = canary("old")
    run("put", "svc/key", "--created-at", "100d", "--ref", vendor.state.add_key(old), input=old)
    assert run("rotate", "svc/key").exit_code == 0
    rolled = run("rollback", "svc/key", "--format", "json")
    assert rolled.exit_code == 0, rolled.output
    assert json.loads(rolled.stdout)["primary"]["fingerprint"] == SecretValue(old).fingerprint
    assert store(workdir).get_keyset("svc/key").primary.secret.reveal() == old
    # the restored key is 100 days old, but its age counts from the rollback
    again = run("rotate", "svc/key", "--format", "json")
    assert json.loads(again.stdout)[0]["result"] == "unchanged"
    assert run("rotate", "--all", "--format", "json").exit_code == 0
    assert store(workdir).get_keyset("svc/key").primary.secret.reveal() == old
    forced = run("rotate", "svc/key", "--force", "--format", "json")
    assert json.loads(forced.stdout)[0]["result"] == "rotated"
    assert_not_leaked(rolled.output + again.output + forced.output, old, where="rollback output")


def test_rollback_is_refused_without_a_previous_or_to_a_revoked_key(
    workdir: Path, vendor: VendorAPI
) -> None:
    admin = canary("admin")
    vendor.state.admin_keys.add(admin)
    run("put", "vendor/admin", input=admin)
    config = workdir / "keyvault.toml"
    config.write_text(config.read_text() + vendor.issuer_toml("svc/key"))
    old = canary("old")
    run("put", "svc/key", "--created-at", "100d", "--ref", vendor.state.add_key(old), input=old)
    none = run("rollback", "svc/key")
    assert none.exit_code == 2 and "no previous version" in none.stderr
    assert run("rotate", "svc/key").exit_code == 0
    vendor.state.revoke(old)  # revoked upstream (by hand, or a retire that crashed midway)
    refused = run("rollback", "svc/key")
    assert refused.exit_code == 1 and "no longer works upstream" in refused.stderr
    assert store(workdir).describe("svc/key").previous is not None  # nothing changed
