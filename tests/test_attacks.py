"""The attacker's and the careless operator's module: hostile names and values, edited,
swapped and forged store rows, a deleted or read-only store, a down backend, and the
recovery paths out of each. Every test here failed on the code before it was written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest
from click.testing import CliRunner, Result

from keyvault.crypto import Keyring, MasterKey
from keyvault.errors import (
    EnvironmentMismatch,
    IntegrityError,
    InvalidKeyName,
    InvalidKeyValue,
)
from keyvault.masterkey import keyring_from_file
from keyvault.model import MAX_VALUE_BYTES, BrokenKey, check_value, validate_name
from keyvault.providers.base import KeyProvider
from keyvault.providers.file import FileProvider
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue
from rotation.cli import cli
from rotation.config import load_config, parse_config
from rotation.engine import Result as Outcome
from rotation.issuers import Issued
from rotation.service import Service
from tests.conftest import STANDARD_CONFIG, Clock, prepare_workdir
from tests.leaks import assert_not_leaked, canary
from tests.rotation_helpers import RecordingIssuer, make_kv, make_rotator
from tests.vendor_api import VendorAPI

CONFIG = STANDARD_CONFIG


def run(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def store_of(workdir: Path) -> FileProvider:
    return FileProvider("local", workdir / "store.db", keyring_from_file(workdir / "master.key"))


def days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


def tamper(path: Path, sql: str, *params: Any) -> None:
    """An edit made by another tool: plain SQL on the store file."""
    db = sqlite3.connect(path)
    with db:
        changed = db.execute(sql, params).rowcount
    db.close()
    assert changed, f"the tampering statement changed nothing: {sql}"


# -- 1. names ----------------------------------------------------------------------------------

HOSTILE_NAMES = ["a/../../other", "a/../b", "a/./b", "..", ".", "a/..", "./a", "a/.hidden", "a//b"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_dot_segments_and_non_canonical_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidKeyName, match="segment"):
        validate_name(name)


@pytest.mark.parametrize("command", ["put", "get", "stage", "rotate", "retire"])
def test_cli_refuses_walking_names_with_exit_2(workdir: Path, command: str) -> None:
    result = run(command, "a/../../other", input="value-1")
    assert result.exit_code == 2, result.output
    assert "invalid key name" in result.stderr
    assert not (workdir / "other").exists()


def test_vault_paths_cannot_leave_the_prefix_even_past_validation(
    vault_provider: Any, vault_root: Any
) -> None:
    """The backend checks again where it builds the path: no request leaves the prefix."""
    with pytest.raises(InvalidKeyName):
        vault_provider.get_keyset("a/../../../sys/x")
    with pytest.raises(InvalidKeyName):
        vault_provider.create("a/../../other", SecretValue(canary()))
    with pytest.raises(hvac.exceptions.InvalidPath):
        vault_root.secrets.kv.v2.read_secret_version(
            path="other", mount_point="secret", raise_on_deleted_version=True
        )


def test_aws_and_file_backends_check_names_where_they_use_them(
    aws_provider: Any, file_provider: FileProvider
) -> None:
    with pytest.raises(InvalidKeyName):
        aws_provider.create("a/../b", SecretValue(canary()))
    with pytest.raises(InvalidKeyName):
        file_provider.create("a/./b", SecretValue(canary()))
    assert file_provider.list_keys() == []


# -- 2. promotion never drops an unrevoked previous ---------------------------------------------


def test_staged_key_waits_for_the_previous_to_be_revoked(
    provider: KeyProvider, key_name: Any
) -> None:
    """rotate once (previous in grace), stage by hand, plain rotate: it waits; forced, the
    issuer revokes the previous before anything is promoted. On every backend."""
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    issuer = RecordingIssuer()
    kv = make_kv(provider)
    rotator = make_rotator(kv, issuer, clock)
    name = key_name("grace")
    provider.create(name, SecretValue(canary()), created_at=clock.now - timedelta(days=100))
    assert rotator.advance(name).result == Outcome.ROTATED
    previous = provider.describe(name).previous
    assert previous is not None
    provider.stage(name, SecretValue(canary("hand")))

    waiting = rotator.advance(name)
    assert waiting.result == Outcome.WAITING and "grace" in waiting.detail
    after = provider.describe(name)
    assert after.previous is not None and after.previous.version == previous.version
    assert after.pending is not None
    assert issuer.revoked == []

    forced = rotator.advance(name, force=True)
    assert forced.result == Outcome.ROTATED, forced.detail
    assert issuer.revoked == [previous.fingerprint]
    assert forced.steps[0] == "retire"


def test_cli_plain_rotate_with_a_staged_key_in_grace_drops_nothing(workdir: Path) -> None:
    run("put", "svc/a", "--created-at", days_ago(100), input=canary())
    assert run("rotate", "svc/a").exit_code == 0
    before = store_of(workdir).describe("svc/a")
    assert before.previous is not None
    assert run("stage", "svc/a", input=canary("next")).exit_code == 0
    result = run("rotate", "svc/a", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["result"] == "waiting"
    after = store_of(workdir).describe("svc/a")
    assert after.previous == before.previous and after.current == before.current
    retired = sqlite3.connect(workdir / "store.db").execute(
        "SELECT COUNT(*) FROM versions WHERE retired_at IS NOT NULL"
    )
    assert retired.fetchone()[0] == 0


# -- 3. stage --replace validates first ----------------------------------------------------------


def test_stage_replace_with_an_invalid_value_keeps_the_pending_key(workdir: Path) -> None:
    primary, staged = canary("primary"), canary("staged")
    run("put", "svc/a", input=primary)
    assert run("stage", "svc/a", input=staged).exit_code == 0
    for bad in (primary, "   ", "line\nbreak"):
        result = run("stage", "svc/a", "--replace", input=bad)
        assert result.exit_code == 2, result.output
        assert_not_leaked(result.output, primary, where="stage output")
    pending = store_of(workdir).get_pending("svc/a")
    assert pending is not None and pending.secret.reveal() == staged
    replaced = canary("replacement")
    assert run("stage", "svc/a", "--replace", input=replaced).exit_code == 0
    pending = store_of(workdir).get_pending("svc/a")
    assert pending is not None and pending.secret.reveal() == replaced


# -- 4. values: header injection, control characters, size ------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "SECRET\nX-Injected: 1",
        "SECRET\r\nX-Injected: 1",
        "nul\x00byte",
        "esc\x1b[31m",
        "del\x7f",
        "   ",
        "",
        "x" * (MAX_VALUE_BYTES + 1),
    ],
)
def test_put_refuses_unsendable_values_with_exit_2(workdir: Path, value: str) -> None:
    secret = canary() + value if value.strip() else value
    result = run("put", "bad/value", input=secret)
    assert result.exit_code == 2, result.output
    assert_not_leaked(result.output, *[v for v in (secret,) if v.strip()], where="put output")
    assert store_of(workdir).list_keys() == []


def test_put_refuses_non_utf8_and_multiline_needs_the_flag(workdir: Path) -> None:
    result = run("put", "bin/value", input=b"\xff\xfe\x00abc")
    assert result.exit_code == 2 and "not UTF-8" in result.stderr
    pem = "-----BEGIN CERT-----\nMIIB\n-----END CERT-----"
    assert run("put", "pem/value", input=pem).exit_code == 2
    assert run("put", "pem/value", "--multiline", input=pem).exit_code == 0
    assert store_of(workdir).get_keyset("pem/value").primary.secret.reveal() == pem
    assert run("put", "nul/value", "--multiline", input="a\x00b").exit_code == 2


def test_issuer_output_with_a_line_break_is_withdrawn_not_staged(
    file_provider: FileProvider,
) -> None:
    class InjectingIssuer(RecordingIssuer):
        def create(self, key_name: str) -> Issued:
            issued = super().create(key_name)
            return Issued(SecretValue(issued.value.reveal() + "\nX-Injected: 1"), "id-1")

    clock = Clock(datetime.now(UTC))
    issuer = InjectingIssuer()
    rotator = make_rotator(make_kv(file_provider), issuer, clock)
    file_provider.create("svc/a", SecretValue(canary()), created_at=clock.now - timedelta(days=99))
    outcome = rotator.advance("svc/a")
    assert outcome.result == Outcome.FAILED and "line break" in outcome.detail
    assert file_provider.describe("svc/a").pending is None
    assert len(issuer.revoked) == 1  # the unusable key was revoked upstream


def test_a_stored_value_with_a_newline_never_reaches_an_exception_or_the_wire(
    file_provider: FileProvider, vendor: VendorAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written by another tool past every check: the client refuses it, once, and says so
    by fingerprint."""
    monkeypatch.delenv("KEYVAULT_ENV", raising=False)
    raw = canary() + "\nX-Injected: 1"
    file_provider.create("nl/inj", SecretValue(raw))
    kv = make_kv(file_provider)
    with (
        kv.client("nl/inj", base_url=vendor.url) as client,
        pytest.raises(InvalidKeyValue) as excinfo,
    ):
        client.get("/v1/models")
    assert vendor.state.requests == 0
    assert_not_leaked(str(excinfo.value) + repr(excinfo.value), raw, where="the exception")
    assert "fp:" in str(excinfo.value)


def test_check_value_accepts_ordinary_keys() -> None:
    assert check_value("sk-test-AbC_123.xyz~+/=").reveal() == "sk-test-AbC_123.xyz~+/="


# -- 5. the environment guard on every path that hands out a value -------------------------------


def test_reveal_and_get_keyset_are_guarded(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = canary()
    assert run("put", "anthropic/prod", "--environment", "prod", input=raw).exit_code == 0
    monkeypatch.setenv("KEYVAULT_ENV", "dev")
    result = run("get", "anthropic/prod", "--reveal")
    assert result.exit_code == 4, result.output
    assert_not_leaked(result.output, raw, where="get --reveal output")
    kv = KeyVault(load_config(workdir / "keyvault.toml"))
    with pytest.raises(EnvironmentMismatch):
        kv.get_keyset("anthropic/prod")
    monkeypatch.setenv("KEYVAULT_ENV", "prod")
    assert run("get", "anthropic/prod", "--reveal").stdout == raw + "\n"


def test_require_environment_refuses_unlabelled_keys(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = canary()
    run("put", "plain/key", input=raw)
    (workdir / "keyvault.toml").write_text("require_environment = true\n" + CONFIG)
    assert run("get", "plain/key", "--reveal").exit_code == 0  # no process environment
    monkeypatch.setenv("KEYVAULT_ENV", "prod")
    refused = run("get", "plain/key", "--reveal")
    assert refused.exit_code == 4 and "no environment label" in refused.stderr
    assert_not_leaked(refused.output, raw, where="get --reveal output")
    kv = KeyVault(load_config(workdir / "keyvault.toml"))
    with pytest.raises(EnvironmentMismatch):
        kv.client("plain/key", base_url="http://127.0.0.1:9")


# -- 6. the store's metadata is authenticated ----------------------------------------------------

EDITS = {
    "created_at makes an overdue key look new": (
        "UPDATE versions SET created_at = ? WHERE stage = 'current'",
        datetime.now(UTC).isoformat(),
    ),
    "environment turns prod into dev": ("UPDATE keys SET environment = 'dev'",),
    "a fake fingerprint": ("UPDATE versions SET fingerprint = 'fp:0000000000000000'",),
    "promoted_at moves the grace period": ("UPDATE keys SET promoted_at = ?", "2020-01-01"),
    "the issuer ref points elsewhere": ("UPDATE versions SET issuer_ref = 'other'",),
    "a forged MAC": ("UPDATE versions SET mac = 'mk:0:00'",),
    "the MAC removed": ("UPDATE keys SET mac = NULL",),
}


@pytest.mark.parametrize("edit", list(EDITS), ids=lambda e: e.replace(" ", "-"))
def test_every_edited_field_is_an_integrity_error_everywhere(workdir: Path, edit: str) -> None:
    raw = canary()
    run("put", "svc/a", "--environment", "prod", "--ref", "id-1", "--created-at", days_ago(120),
        input=raw)  # fmt: skip
    run("put", "svc/fine", input=canary())
    sql, *params = EDITS[edit]
    tamper(workdir / "store.db", sql + (" WHERE name = 'svc/a'" if "WHERE" not in sql else
                                        " AND name = 'svc/a'"), *params)  # fmt: skip
    for args in (["get", "svc/a"], ["get", "svc/a", "--reveal"], ["rotate", "svc/a", "--force"]):
        result = run(*args)
        assert result.exit_code == 6, (args, result.output)
        assert_not_leaked(result.output, raw, where=" ".join(args))
    audit = run("audit", "--format", "json")
    assert audit.exit_code == 6, audit.output
    rows = {row["name"]: row for row in json.loads(audit.stdout)["keys"]}
    assert rows["svc/a"]["status"] == "error" and rows["svc/fine"]["status"] == "ok"
    listed = run("list", "--format", "json")
    assert listed.exit_code == 6
    assert [row["name"] for row in json.loads(listed.stdout)] == ["svc/fine"]


def test_swapped_stage_rows_are_detected(workdir: Path) -> None:
    run("put", "svc/a", "--created-at", days_ago(100), input=canary())
    assert run("rotate", "svc/a").exit_code == 0
    store = workdir / "store.db"
    tamper(store, "UPDATE versions SET stage = 'pending' WHERE stage = 'current'")
    tamper(store, "UPDATE versions SET stage = 'current' WHERE stage = 'previous'")
    tamper(store, "UPDATE versions SET stage = 'previous' WHERE stage = 'pending'")
    assert run("get", "svc/a", "--reveal").exit_code == 6


def test_a_retired_row_put_back_in_a_stage_is_detected(workdir: Path) -> None:
    run("put", "svc/a", "--created-at", days_ago(100), input=canary())
    run("rotate", "svc/a")
    run("retire", "svc/a")
    tamper(workdir / "store.db", "UPDATE versions SET stage = 'previous' WHERE version = 1")
    assert run("get", "svc/a").exit_code == 6


def test_tampered_current_value_is_caught_by_audit_and_forced_rotation(workdir: Path) -> None:
    run("put", "svc/a", input=canary())
    (ciphertext,) = (
        sqlite3.connect(workdir / "store.db").execute("SELECT ciphertext FROM versions").fetchone()
    )
    tamper(workdir / "store.db", "UPDATE versions SET ciphertext = ?", ciphertext[:-1] + b"\x00")
    audit = run("audit", "--format", "json")
    assert audit.exit_code == 6
    assert json.loads(audit.stdout)["keys"][0]["status"] == "error"
    assert run("rotate", "svc/a", "--force").exit_code == 6


def test_tampered_secondary_spoils_only_itself(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = canary("old")
    run("put", "svc/a", "--created-at", days_ago(100), input=old)
    run("rotate", "svc/a")
    current = store_of(workdir).get_keyset("svc/a").primary.secret.reveal()
    tamper(workdir / "store.db", "UPDATE versions SET ciphertext = X'00' WHERE version = 1")
    with caplog.at_level(logging.WARNING):
        revealed = run("get", "svc/a", "--reveal")
    assert revealed.exit_code == 0 and revealed.stdout == current + "\n"
    assert "previous version 1 failed authentication" in caplog.text
    audit = run("audit", "--format", "json")
    assert audit.exit_code == 6
    (row,) = json.loads(audit.stdout)["keys"]
    assert row["status"] == "error" and "previous version 1" in row["note"]
    assert run("rotate", "svc/a", "--force").exit_code == 6
    assert run("retire", "svc/a").exit_code == 6  # cannot revoke what cannot be read
    hand = run("retire", "svc/a", "--revoked-by-hand")
    assert hand.exit_code == 0, hand.output
    assert run("audit").exit_code == 0
    assert_not_leaked(revealed.stderr + audit.output, old, current, where="output")


def test_rekey_carries_authentication_over(workdir: Path) -> None:
    run("put", "svc/a", "--environment", "prod", input=canary())
    assert run("rekey").exit_code == 0
    assert run("get", "svc/a", "--reveal").exit_code == 0
    tamper(workdir / "store.db", "UPDATE keys SET environment = 'dev'")
    assert run("get", "svc/a", "--reveal").exit_code == 6


def test_rekey_refuses_to_bless_a_tampered_row(workdir: Path) -> None:
    run("put", "svc/a", input=canary())
    tamper(workdir / "store.db", "UPDATE versions SET created_at = '2099-01-01T00:00:00+00:00'")
    result = run("rekey")
    assert result.exit_code == 6, result.output
    assert run("get", "svc/a").exit_code == 6


def _legacy_store(path: Path, keyring: Keyring) -> None:
    """A store as the first release wrote it: no MAC columns, a v1 check value."""
    store = FileProvider("local", path, keyring, create=True)
    store.create("old/key", SecretValue(canary()))
    store.close()
    db = sqlite3.connect(path)
    with db:
        db.execute("ALTER TABLE versions DROP COLUMN mac")
        db.execute("ALTER TABLE keys DROP COLUMN mac")
        sealed = keyring.seal(b"keyvault master key check v1", b"keyvault/v1\x00check")
        db.execute(
            "UPDATE check_values SET nonce = ?, ciphertext = ?", (sealed.nonce, sealed.ciphertext)
        )
    db.close()


def test_a_store_from_before_row_macs_is_upgraded_once(tmp_path: Path) -> None:
    keyring = Keyring([MasterKey.generate()])
    path = tmp_path / "s.db"
    _legacy_store(path, keyring)
    upgraded = FileProvider("local", path, keyring)
    assert upgraded.describe("old/key").current.version == "1"
    upgraded.close()
    tamper(path, "UPDATE keys SET environment = 'dev'")
    with pytest.raises(IntegrityError):
        FileProvider("local", path, keyring).describe("old/key")


def test_dropping_the_mac_columns_does_not_reopen_the_upgrade(tmp_path: Path) -> None:
    keyring = Keyring([MasterKey.generate()])
    path = tmp_path / "s.db"
    FileProvider("local", path, keyring, create=True).create("k", SecretValue(canary()))
    db = sqlite3.connect(path)
    with db:
        db.execute("ALTER TABLE versions DROP COLUMN mac")
        db.execute("ALTER TABLE keys DROP COLUMN mac")
        db.execute("UPDATE keys SET environment = 'dev'")
    db.close()
    store = FileProvider("local", path, keyring)
    (broken,) = store.list_keys()
    assert isinstance(broken, BrokenKey) and isinstance(broken.error, IntegrityError)


# -- 7. monitoring says so when the only backend is down ---------------------------------------


def _service(config_text: str, workdir: Path) -> Service:
    (workdir / "keyvault.toml").write_text(config_text)
    kv = KeyVault(load_config(workdir / "keyvault.toml"))
    return Service(kv, port=0, interval=timedelta(hours=1))


def test_unreachable_vault_fails_the_sweep_and_the_health_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "unused")
    service = _service(
        '[providers.bao]\ntype = "vault"\nurl = "http://127.0.0.1:9"\ntimeout = 2\n', tmp_path
    )
    service.start()
    try:
        health = _wait_for_sweep(service)
        assert health.status_code == 503
        body = health.json()
        assert body["last_sweep_ok"] is False and "bao" in body["reason"]
        assert "unreachable" in body["reason"]
        metrics = httpx.get(f"http://127.0.0.1:{service.port}/metrics").text
        assert 'keyvault_provider_up{provider="bao"} 0.0' in metrics
        assert "keyvault_sweeps_failed_total 1.0" in metrics
        assert "keyvault_last_successful_sweep_timestamp_seconds 0.0" in metrics
    finally:
        service.stop()


def test_health_recovers_after_a_good_sweep(workdir: Path) -> None:
    (workdir / "store.db").unlink()
    service = _service(CONFIG, workdir)
    service.start()
    try:
        assert _wait_for_sweep(service).status_code == 503
        prepare_workdir(workdir, CONFIG)  # the operator restores the store
        service.sweep_once()
        health = httpx.get(f"http://127.0.0.1:{service.port}/healthz")
        assert health.status_code == 200 and health.json()["reason"] is None
        metrics = httpx.get(f"http://127.0.0.1:{service.port}/metrics").text
        assert 'keyvault_provider_up{provider="local"} 1.0' in metrics
    finally:
        service.stop()


def _wait_for_sweep(service: Service) -> httpx.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if service.sweeps >= 1:
            return httpx.get(f"http://127.0.0.1:{service.port}/healthz")
        time.sleep(0.05)
    raise AssertionError("no sweep ran")


# -- 8. a deleted store is not recreated --------------------------------------------------------


def test_a_deleted_store_is_an_error_naming_the_path(workdir: Path) -> None:
    run("put", "svc/a", input=canary())
    (workdir / "store.db").unlink()
    for args in (["list"], ["get", "svc/a"], ["audit"], ["put", "svc/b", "--generate"]):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "store.db does not exist" in result.stderr and "keyvault init" in result.stderr
    assert not (workdir / "store.db").exists()


# -- 9. read-only places -------------------------------------------------------------------------


def _read_only_run(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """keyvault in ``directory`` made read-only: a read-only bind mount in a private mount
    namespace for root (whom permissions do not stop), plain permissions for anyone else."""
    exe = str(Path(sys.executable).with_name("keyvault"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("root without unshare(1): cannot make a read-only place here")
        script = (
            'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && cd "$0" && exec "$@"'
        )
        command = ["unshare", "-m", "sh", "-c", script, str(directory), exe, *args]
        return subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    modes = {path: path.stat().st_mode for path in [directory, *directory.iterdir()]}
    try:
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return subprocess.run([exe, *args], cwd=directory, env=env, capture_output=True, text=True)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def test_reads_work_on_a_read_only_store_and_writes_say_why_not(workdir: Path) -> None:
    raw = canary()
    run("put", "svc/a", "--created-at", days_ago(100), input=raw)
    listed = _read_only_run(workdir, "list")
    assert listed.returncode == 0, listed.stderr
    assert "svc/a" in listed.stdout
    revealed = _read_only_run(workdir, "get", "svc/a", "--reveal")
    assert revealed.returncode == 0 and revealed.stdout == raw + "\n", revealed.stderr
    assert _read_only_run(workdir, "audit").returncode == 0
    for args in (["rotate", "svc/a"], ["put", "svc/b", "--generate"]):
        refused = _read_only_run(workdir, *args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert "read-only" in refused.stderr and "store.db" in refused.stderr
        assert "unexpected" not in refused.stderr


def test_init_in_a_read_only_place_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    result = _read_only_run(target, "init")
    assert result.returncode == 2, result.stderr
    assert "cannot initialise" in result.stderr and "unexpected" not in result.stderr


# -- 10. init's files are private whatever the umask ----------------------------------------------


def test_init_ignores_a_permissive_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    old = os.umask(0)
    try:
        assert run("init").exit_code == 0
    finally:
        os.umask(old)
    made = (".keyvault", "keyvault.toml", ".keyvault/master.key", ".keyvault/store.db")
    mode = {path: (tmp_path / path).stat().st_mode & 0o777 for path in made}
    assert mode == {
        ".keyvault": 0o700,
        "keyvault.toml": 0o644,
        ".keyvault/master.key": 0o600,
        ".keyvault/store.db": 0o600,
    }


# -- recovery paths --------------------------------------------------------------------------------


def _http_issuer_config(vendor: VendorAPI, *, revoke: bool = True) -> str:
    """An issuing admin API on the loopback vendor; its admin key goes into the store."""
    admin = canary("admin")
    vendor.state.admin_keys.add(admin)
    assert run("put", "vendor/admin", input=admin).exit_code == 0
    return CONFIG + vendor.issuer_toml("svc/a", verify=False, revoke=revoke)


def test_put_ref_lets_an_imported_key_be_revoked_later(workdir: Path, vendor: VendorAPI) -> None:
    imported = canary("imported")
    key_id = vendor.state.add_key(imported)
    (workdir / "keyvault.toml").write_text(_http_issuer_config(vendor))
    put = run("put", "svc/a", "--ref", key_id, "--created-at", days_ago(100), input=imported)
    assert put.exit_code == 0, put.output
    assert run("rotate", "svc/a").exit_code == 0
    assert run("retire", "svc/a").exit_code == 0
    assert vendor.state.status_of(imported) == "inactive"


def test_revoked_by_hand_retires_a_key_the_issuer_cannot_revoke(
    workdir: Path, vendor: VendorAPI, caplog: pytest.LogCaptureFixture
) -> None:
    imported = canary("imported")
    vendor.state.add_key(imported)
    (workdir / "keyvault.toml").write_text(_http_issuer_config(vendor))
    run("put", "svc/a", "--created-at", days_ago(100), input=imported)  # no --ref
    assert run("rotate", "svc/a").exit_code == 0
    stuck = run("retire", "svc/a")
    assert stuck.exit_code == 5 and "id for it was not recorded" in stuck.stderr
    with caplog.at_level(logging.WARNING):
        done = run("retire", "svc/a", "--revoked-by-hand")
    assert done.exit_code == 0, done.output
    assert "WITHOUT an issuer revoke" in caplog.text
    assert store_of(workdir).describe("svc/a").previous is None


def test_issuer_ids_cannot_walk_the_revoke_url(workdir: Path, vendor: VendorAPI) -> None:
    (workdir / "keyvault.toml").write_text(_http_issuer_config(vendor))
    run("put", "svc/a", "--ref", "../../v1/models", "--created-at", days_ago(100), input=canary())
    run("rotate", "svc/a")
    run("retire", "svc/a")
    assert "/admin/keys/..%2F..%2Fv1%2Fmodels" in vendor.state.paths


def test_rotating_a_named_read_only_key_is_exit_2(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI_TOKEN", canary())
    (workdir / "keyvault.toml").write_text(
        CONFIG + '\n[providers.env]\ntype = "env"\nkeys = ["ci/token"]\n'
    )
    named = run("rotate", "ci/token", "--force")
    assert named.exit_code == 2 and "read-only" in named.output
    everything = run("rotate", "--all", "--format", "json")
    assert everything.exit_code == 0, everything.output


def test_interrupted_rotate_all_prints_what_it_did_and_exits_130(
    workdir: Path, vendor: VendorAPI
) -> None:
    config = _http_issuer_config(vendor, revoke=False)
    vendor.state.delay = 0.3
    store = store_of(workdir)
    for index in range(20):
        name = f"due/k{index:02d}"
        config += f'\n[keys."{name}"]\nissuer = "vendor"\n'
        store.create(name, SecretValue(canary()), created_at=datetime.now(UTC) - timedelta(99))
    store.close()
    (workdir / "keyvault.toml").write_text(config)
    exe = str(Path(sys.executable).with_name("keyvault"))
    proc = subprocess.Popen(
        [exe, "rotate", "--all", "--format", "json"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while vendor.state.requests < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    outcomes = json.loads(out)
    assert 1 <= len(outcomes) < 20
    assert all(o["result"] == "rotated" for o in outcomes)
    assert store_of(workdir).promotions() == len(outcomes)


def test_config_with_require_environment_parses() -> None:
    config = parse_config({"require_environment": True, "providers": {"l": {"type": "file"}}})
    assert config.require_environment is True
