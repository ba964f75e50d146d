"""The embedded store on real SQLite files: sealing, tampering, master keys, processes."""

from __future__ import annotations

import base64
import multiprocessing
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keyvault.crypto import Keyring, MasterKey
from keyvault.errors import (
    BackendUnavailableError,
    ConfigError,
    ConflictError,
    IntegrityError,
    KeyExistsError,
)
from keyvault.masterkey import keyring_from_env, keyring_from_file, write_key_file
from keyvault.model import InvalidKeyName
from keyvault.providers.file import FileProvider
from keyvault.secret import SecretValue
from tests.leaks import assert_not_leaked, canary


def test_values_are_encrypted_at_rest(tmp_path: Path, keyring: Keyring) -> None:
    raw = canary()
    store = FileProvider("local", tmp_path / "s.db", keyring, create=True)
    store.create("a/b", SecretValue(raw))
    store.close()
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert raw.encode() not in data, f"plaintext found in {path.name}"


def test_store_file_is_private(tmp_path: Path, keyring: Keyring) -> None:
    FileProvider("local", tmp_path / "s.db", keyring, create=True).close()
    assert (tmp_path / "s.db").stat().st_mode & 0o077 == 0


def _tamper(path: Path, sql: str, *params: object) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, params)
    db.commit()
    db.close()


def test_flipped_ciphertext_byte_is_an_integrity_error(tmp_path: Path, keyring: Keyring) -> None:
    raw = canary()
    path = tmp_path / "s.db"
    store = FileProvider("local", path, keyring, create=True)
    store.create("a/b", SecretValue(raw))
    (ciphertext,) = sqlite3.connect(path).execute("SELECT ciphertext FROM versions").fetchone()
    flipped = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    _tamper(path, "UPDATE versions SET ciphertext = ?", flipped)
    with pytest.raises(IntegrityError, match="tampered") as excinfo:
        store.get_keyset("a/b")
    assert_not_leaked(str(excinfo.value), raw, where="the error")


def test_ciphertext_moved_to_another_key_fails(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "s.db"
    store = FileProvider("local", path, keyring, create=True)
    store.create("victim", SecretValue(canary()))
    store.create("attacker", SecretValue(canary()))
    db = sqlite3.connect(path)
    nonce, ciphertext = db.execute(
        "SELECT nonce, ciphertext FROM versions WHERE name = 'attacker'"
    ).fetchone()
    db.close()
    _tamper(
        path,
        "UPDATE versions SET nonce = ?, ciphertext = ? WHERE name = 'victim'",
        nonce,
        ciphertext,
    )
    with pytest.raises(IntegrityError):
        store.get_keyset("victim")


def test_ciphertext_moved_to_another_version_fails(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "s.db"
    store = FileProvider("local", path, keyring, create=True)
    store.create("k", SecretValue(canary()))
    store.stage("k", SecretValue(canary()))
    db = sqlite3.connect(path)
    nonce, ciphertext = db.execute(
        "SELECT nonce, ciphertext FROM versions WHERE version = 2"
    ).fetchone()
    db.close()
    _tamper(
        path, "UPDATE versions SET nonce = ?, ciphertext = ? WHERE version = 1", nonce, ciphertext
    )
    with pytest.raises(IntegrityError):
        store.get_keyset("k")


def test_wrong_master_key_fails_at_open(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "s.db"
    FileProvider("local", path, keyring, create=True).create("k", SecretValue(canary()))
    with pytest.raises(IntegrityError, match="wrong master key"):
        FileProvider("local", path, Keyring([MasterKey.generate()]))


def test_new_master_key_first_old_still_decrypts(tmp_path: Path, keyring: Keyring) -> None:
    raw = canary()
    path = tmp_path / "s.db"
    FileProvider("local", path, keyring, create=True).create("k", SecretValue(raw))
    ring = Keyring([MasterKey.generate(), *keyring.keys])
    store = FileProvider("local", path, ring, create=True)
    assert store.get_keyset("k").primary.secret.reveal() == raw


def test_not_a_store_is_an_integrity_error(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(IntegrityError, match="not a keyvault store"):
        FileProvider("local", path, keyring, create=True)


def test_unopenable_path_is_backend_unavailable(tmp_path: Path, keyring: Keyring) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BackendUnavailableError, match=r"cannot create store .*Not a directory"):
        FileProvider("local", blocker / "s.db", keyring, create=True)


# -- master keys ------------------------------------------------------------


def test_key_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    write_key_file(path, [MasterKey.generate()])
    assert path.stat().st_mode & 0o777 == 0o600
    keyring_from_file(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by group or others \(mode 0644\)"):
        keyring_from_file(path)
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        keyring_from_file(path)


def test_key_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(ConfigError, match=r"missing\.key does not exist"):
        keyring_from_file(missing)
    bad = tmp_path / "bad.key"
    bad.write_text("not base64!!\n")
    bad.chmod(0o600)
    with pytest.raises(ConfigError, match=r"bad\.key: master key is not valid base64"):
        keyring_from_file(bad)
    short = tmp_path / "short.key"
    short.write_text(base64.b64encode(b"x" * 16).decode())
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="32 bytes"):
        keyring_from_file(short)


def test_key_file_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    write_key_file(path, [MasterKey.generate()])
    with pytest.raises(FileExistsError):
        write_key_file(path, [MasterKey.generate()])


def test_master_key_from_env() -> None:
    key = MasterKey.generate()
    ring = keyring_from_env("KV_TEST_MK", {"KV_TEST_MK": key.to_base64()})
    assert ring.primary.key_id == key.key_id
    with pytest.raises(ConfigError, match="KV_TEST_MK is not set"):
        keyring_from_env("KV_TEST_MK", {})
    with pytest.raises(ConfigError, match=r"\$KV_TEST_MK: master key is not valid base64"):
        keyring_from_env("KV_TEST_MK", {"KV_TEST_MK": "%%%"})


def test_master_key_repr_hides_material() -> None:
    key = MasterKey.generate()
    assert key.to_base64() not in repr(key)


# -- two processes ------------------------------------------------------------


def _promote_in_process(
    path: str, key_b64: str, pending: str, current: str, barrier: object, results: object
) -> None:
    store = FileProvider("local", Path(path), Keyring([MasterKey.from_base64(key_b64, source="t")]))
    barrier.wait()  # type: ignore[attr-defined]
    try:
        store.promote("race/key", pending_version=pending, expected_current=current)
        results.put("won")  # type: ignore[attr-defined]
    except ConflictError:
        results.put("conflict")  # type: ignore[attr-defined]
    store.close()


def test_two_processes_promoting_one_wins(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "s.db"
    store = FileProvider("local", path, keyring, create=True)
    v1 = store.create("race/key", SecretValue(canary())).current.version
    staged = store.stage("race/key", SecretValue(canary()))
    assert staged.pending is not None
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    args = (str(path), keyring.primary.to_base64(), staged.pending.version, v1, barrier, results)
    procs = [ctx.Process(target=_promote_in_process, args=args) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert sorted(results.get(timeout=5) for _ in range(2)) == ["conflict", "won"]
    assert store.describe("race/key").current.version == staged.pending.version
    assert store.promotions("race/key") == 1


def test_create_many_imports_in_batches_and_stops_at_an_existing_name(
    tmp_path: Path, keyring: Keyring
) -> None:
    store = FileProvider("local", tmp_path / "s.db", keyring, create=True)
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
    values = {f"fleet/k{i:02d}": canary() for i in range(7)}
    created = store.create_many(
        ((name, SecretValue(raw), old, "prod") for name, raw in values.items()), batch=3
    )
    assert created == 7
    for name, raw in values.items():
        keyset = store.get_keyset(name)
        assert keyset.primary.secret.reveal() == raw and keyset.environment == "prod"
        assert keyset.primary.created_at == old
    # an existing name stops the import; the batches before it are kept, its own is not
    more = [(f"more/k{i}", SecretValue(canary()), None, None) for i in range(4)]
    more.insert(4, ("fleet/k00", SecretValue(canary()), None, None))
    with pytest.raises(KeyExistsError):
        store.create_many(more, batch=3)
    names = {info.name for info in store.list_keys()}
    assert {"more/k0", "more/k1", "more/k2"} <= names and "more/k3" not in names
    with pytest.raises(InvalidKeyName):
        store.create_many([("a/../b", SecretValue(canary()), None, None)])
    store.close()
