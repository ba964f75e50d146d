"""The embedded default: an encrypted SQLite file that works on a fresh machine.

Each value is sealed with AES-256-GCM under the store's master keyring, with the key name
and version as associated data. Stages are a column on the version rows with a partial
unique index (one current, one previous, one pending per key), and every write is one
``BEGIN IMMEDIATE`` transaction that checks the stages it expects before moving them, so two
processes promoting the same key serialise on SQLite's write lock and the second one sees
the first one's result: a ConflictError.

Retired versions keep their row (version, fingerprint, times) as the audit trail, with
their ciphertext wiped.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from keyvault.crypto import Keyring, Sealed
from keyvault.errors import (
    BackendUnavailableError,
    IntegrityError,
    KeyExistsError,
    KeyNotFoundError,
)
from keyvault.model import KeyInfo, KeySet, KeyVersion, Stage, VersionInfo, utcnow
from keyvault.providers.base import (
    KeyProvider,
    check_replace,
    expect_no_previous,
    expect_version,
)
from keyvault.secret import SecretValue

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS check_values (
    key_id TEXT PRIMARY KEY,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    environment TEXT,
    next_version INTEGER NOT NULL,
    promoted_at TEXT
);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL REFERENCES keys(name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    stage TEXT CHECK (stage IN ('current', 'previous', 'pending')),
    key_id TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at TEXT,
    promoted_at TEXT,
    retired_at TEXT,
    request_token TEXT,
    issuer_ref TEXT,
    PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_one_per_stage
    ON versions(name, stage) WHERE stage IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS versions_request_token
    ON versions(name, request_token) WHERE request_token IS NOT NULL;
"""

_CHECK_PLAINTEXT = b"keyvault master key check v1"
_CHECK_AAD = b"keyvault/v1\x00check"


def _aad(name: str, version: int) -> bytes:
    return f"keyvault/v1\x00{name}\x00{version}".encode()


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _version_of(row: Any) -> str | None:
    return None if row is None else str(row[1])


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class FileProvider(KeyProvider):
    """Keys in one SQLite file, sealed under a master keyring."""

    def __init__(
        self,
        name: str,
        path: Path,
        keyring: Keyring,
        *,
        clock: Callable[[], datetime] = utcnow,
        busy_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.path = path
        self._keyring = keyring
        self._clock = clock
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._db = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(versions)")}
            if "issuer_ref" not in columns:  # stores made before issuer refs existed
                self._db.execute("ALTER TABLE versions ADD COLUMN issuer_ref TEXT")
        except sqlite3.DatabaseError as exc:
            raise self._mapped(exc) from None
        except OSError as exc:
            raise BackendUnavailableError(f"cannot open store {path}: {exc.strerror}") from None
        self._check_master_key()

    # -- plumbing --------------------------------------------------------------------------

    def _mapped(self, exc: sqlite3.Error) -> Exception:
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError):
            if "locked" in text or "busy" in text:
                return BackendUnavailableError(f"store {self.path} is locked by another writer")
            return BackendUnavailableError(f"store {self.path} cannot be used: {text}")
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
            return IntegrityError(f"store {self.path} is not a keyvault store or is corrupt")
        return BackendUnavailableError(f"store {self.path}: {text}")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise self._mapped(exc) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front, so the reads inside
        it see the state no other writer can change before we commit."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._mapped(exc) from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise self._mapped(exc) from None

    def _check_master_key(self) -> None:
        """Fail at open, not at first read, when the master key is not this store's."""
        with self._write() as db:
            rows = {
                row[0]: Sealed(row[0], row[1], row[2])
                for row in db.execute("SELECT key_id, nonce, ciphertext FROM check_values")
            }
            known = [kid for kid in self._keyring.key_ids() if kid in rows]
            if rows and not known:
                raise IntegrityError(
                    f"wrong master key for store {self.path}: it was sealed with "
                    f"{', '.join(sorted(rows))}, the configured key is "
                    f"{', '.join(self._keyring.key_ids())}"
                )
            for kid in known:
                self._keyring.open(rows[kid], _CHECK_AAD)
            if self._keyring.primary.key_id not in rows:
                sealed = self._keyring.seal(_CHECK_PLAINTEXT, _CHECK_AAD)
                db.execute(
                    "INSERT INTO check_values VALUES (?, ?, ?)",
                    (sealed.key_id, sealed.nonce, sealed.ciphertext),
                )

    def _stages(self, db: sqlite3.Connection, name: str) -> dict[str, Any]:
        if db.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone() is None:
            raise KeyNotFoundError(f"key {name!r} not found in provider {self.name!r}")
        return {
            row[0]: row
            for row in db.execute(
                "SELECT stage, version, fingerprint, created_at, issuer_ref, key_id, nonce, "
                "ciphertext FROM versions WHERE name = ? AND stage IS NOT NULL",
                (name,),
            )
        }

    def _decrypt(self, name: str, row: Any) -> KeyVersion:
        _stage, version, _fp, created_at, ref, key_id, nonce, ciphertext = row
        plaintext = self._keyring.open(Sealed(key_id, nonce, ciphertext), _aad(name, version))
        secret = SecretValue(plaintext.decode("utf-8"))
        return KeyVersion(str(version), secret, _dt(created_at), ref)

    def _insert_version(
        self,
        db: sqlite3.Connection,
        name: str,
        value: SecretValue,
        stage: Stage,
        created_at: datetime,
        request_token: str | None = None,
        ref: str | None = None,
    ) -> int:
        (version,) = db.execute("SELECT next_version FROM keys WHERE name = ?", (name,)).fetchone()
        sealed = self._keyring.seal(value.reveal().encode("utf-8"), _aad(name, version))
        db.execute(
            "INSERT INTO versions (name, version, stage, key_id, nonce, ciphertext, "
            "fingerprint, created_at, request_token, issuer_ref) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                version,
                stage.value,
                sealed.key_id,
                sealed.nonce,
                sealed.ciphertext,
                value.fingerprint,
                _ts(created_at),
                request_token,
                ref,
            ),
        )
        db.execute("UPDATE keys SET next_version = ? WHERE name = ?", (version + 1, name))
        return int(version)

    def _retire_row(self, db: sqlite3.Connection, name: str, version: int) -> None:
        db.execute(
            "UPDATE versions SET stage = NULL, retired_at = ?, nonce = X'', ciphertext = X'' "
            "WHERE name = ? AND version = ?",
            (_ts(self._clock()), name, version),
        )

    def _info(self, db: sqlite3.Connection, name: str) -> KeyInfo:
        stages = self._stages(db, name)
        environment, promoted_at = db.execute(
            "SELECT environment, promoted_at FROM keys WHERE name = ?", (name,)
        ).fetchone()
        return self._info_from(name, environment, promoted_at, stages)

    def _info_from(
        self, name: str, environment: str | None, promoted_at: str | None, stages: dict[str, Any]
    ) -> KeyInfo:
        def version_info(stage: Stage) -> VersionInfo | None:
            row = stages.get(stage.value)
            if row is None:
                return None
            return VersionInfo(str(row[1]), row[2], _dt(row[3]), row[4])

        current = version_info(Stage.CURRENT)
        if current is None:
            raise IntegrityError(f"key {name!r} in store {self.path} has no current version")
        return KeyInfo(
            name=name,
            provider=self.name,
            current=current,
            previous=version_info(Stage.PREVIOUS),
            pending=version_info(Stage.PENDING),
            environment=environment,
            promoted_at=_dt(promoted_at),
        )

    # -- reading ---------------------------------------------------------------------------

    def get_keyset(self, name: str) -> KeySet:
        with self._read() as db:
            stages = self._stages(db, name)
            (environment,) = db.execute(
                "SELECT environment FROM keys WHERE name = ?", (name,)
            ).fetchone()
        if Stage.CURRENT.value not in stages:
            raise IntegrityError(f"key {name!r} in store {self.path} has no current version")
        primary = self._decrypt(name, stages[Stage.CURRENT.value])
        previous = stages.get(Stage.PREVIOUS.value)
        secondary = None if previous is None else self._decrypt(name, previous)
        return KeySet(name, primary, secondary, environment)

    def get_pending(self, name: str) -> KeyVersion | None:
        with self._read() as db:
            row = self._stages(db, name).get(Stage.PENDING.value)
        return None if row is None else self._decrypt(name, row)

    def describe(self, name: str) -> KeyInfo:
        with self._read() as db:
            return self._info(db, name)

    def list_keys(self) -> list[KeyInfo]:
        with self._read() as db:
            keys = db.execute(
                "SELECT name, environment, promoted_at FROM keys ORDER BY name"
            ).fetchall()
            stages: dict[str, dict[str, Any]] = {}
            for row in db.execute(
                "SELECT name, stage, version, fingerprint, created_at, issuer_ref FROM versions "
                "WHERE stage IS NOT NULL"
            ):
                stages.setdefault(row[0], {})[row[1]] = row[1:]
        return [self._info_from(n, env, prom, stages.get(n, {})) for n, env, prom in keys]

    # -- writing ---------------------------------------------------------------------------

    def create(
        self,
        name: str,
        value: SecretValue,
        *,
        environment: str | None = None,
        created_at: datetime | None = None,
        ref: str | None = None,
    ) -> KeyInfo:
        with self._write() as db:
            exists = db.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone()
            if exists:
                raise KeyExistsError(
                    f"key {name!r} already exists in provider {self.name!r}; "
                    "use `keyvault rotate` to replace its value"
                )
            db.execute(
                "INSERT INTO keys (name, environment, next_version) VALUES (?, ?, 1)",
                (name, environment),
            )
            self._insert_version(
                db, name, value, Stage.CURRENT, created_at or self._clock(), ref=ref
            )
            return self._info(db, name)

    def stage(
        self,
        name: str,
        value: SecretValue,
        *,
        request_token: str | None = None,
        ref: str | None = None,
        replace: str | None = None,
    ) -> KeyInfo:
        with self._write() as db:
            stages = self._stages(db, name)
            if request_token is not None:
                done = db.execute(
                    "SELECT 1 FROM versions WHERE name = ? AND request_token = ?",
                    (name, request_token),
                ).fetchone()
                if done:
                    return self._info(db, name)
            pending = stages.get(Stage.PENDING.value)
            check_replace(name, _version_of(pending), replace)
            if pending is not None:
                self._retire_row(db, name, pending[1])
            self._insert_version(db, name, value, Stage.PENDING, self._clock(), request_token, ref)
            return self._info(db, name)

    def promote(self, name: str, *, pending_version: str, expected_current: str) -> KeyInfo:
        with self._write() as db:
            stages = self._stages(db, name)
            pending = stages.get(Stage.PENDING.value)
            current = stages.get(Stage.CURRENT.value)
            expect_version(name, "pending", _version_of(pending), pending_version)
            expect_version(name, "current", _version_of(current), expected_current)
            expect_no_previous(name, _version_of(stages.get(Stage.PREVIOUS.value)))
            assert pending is not None and current is not None
            now = _ts(self._clock())
            db.execute(
                "UPDATE versions SET stage = 'previous' WHERE name = ? AND version = ?",
                (name, current[1]),
            )
            db.execute(
                "UPDATE versions SET stage = 'current', promoted_at = ? "
                "WHERE name = ? AND version = ?",
                (now, name, pending[1]),
            )
            db.execute("UPDATE keys SET promoted_at = ? WHERE name = ?", (now, name))
            return self._info(db, name)

    def retire(self, name: str, *, expected_previous: str) -> KeyInfo:
        return self._drop_stage(name, Stage.PREVIOUS, expected_previous)

    def discard_pending(self, name: str, *, pending_version: str) -> KeyInfo:
        return self._drop_stage(name, Stage.PENDING, pending_version)

    def _drop_stage(self, name: str, stage: Stage, expected: str) -> KeyInfo:
        """Idempotent: a stage already gone is success; another version there is a conflict."""
        with self._write() as db:
            row = self._stages(db, name).get(stage.value)
            if row is not None:
                expect_version(name, stage.value, _version_of(row), expected)
                self._retire_row(db, name, row[1])
            return self._info(db, name)

    def delete(self, name: str) -> None:
        with self._write() as db:
            self._stages(db, name)
            db.execute("DELETE FROM versions WHERE name = ?", (name,))
            db.execute("DELETE FROM keys WHERE name = ?", (name,))

    # -- master key rotation ---------------------------------------------------------------

    def sealed_with(self) -> dict[str, int]:
        """How many live values each master key seals (retired rows hold no ciphertext)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT key_id, COUNT(*) FROM versions WHERE length(ciphertext) > 0 GROUP BY key_id"
            ).fetchall()
        return {key_id: int(count) for key_id, count in rows}

    def reseal(self, batch: int = 100) -> int:
        """Re-encrypt every value not sealed by the primary master key, ``batch`` rows per
        transaction, so an interrupted run loses nothing and the next one carries on."""
        primary = self._keyring.primary.key_id
        total = 0
        while True:
            with self._write() as db:
                rows = db.execute(
                    "SELECT name, version, key_id, nonce, ciphertext FROM versions "
                    "WHERE key_id != ? AND length(ciphertext) > 0 LIMIT ?",
                    (primary, batch),
                ).fetchall()
                for name, version, key_id, nonce, ciphertext in rows:
                    aad = _aad(name, version)
                    plaintext = self._keyring.open(Sealed(key_id, nonce, ciphertext), aad)
                    sealed = self._keyring.seal(plaintext, aad)
                    db.execute(
                        "UPDATE versions SET key_id = ?, nonce = ?, ciphertext = ? "
                        "WHERE name = ? AND version = ?",
                        (sealed.key_id, sealed.nonce, sealed.ciphertext, name, version),
                    )
            total += len(rows)
            if len(rows) < batch:
                return total

    def forget_master_keys(self) -> None:
        """After a reseal: the store no longer recognises any master key but the primary."""
        with self._write() as db:
            (left,) = db.execute(
                "SELECT COUNT(*) FROM versions WHERE key_id != ? AND length(ciphertext) > 0",
                (self._keyring.primary.key_id,),
            ).fetchone()
            if left:
                raise IntegrityError(f"{left} values are still sealed by old master keys")
            db.execute(
                "DELETE FROM check_values WHERE key_id != ?", (self._keyring.primary.key_id,)
            )

    # -- history ---------------------------------------------------------------------------

    def promotions(self, name: str | None = None) -> int:
        """How many promotions the store has recorded (for one key, or all)."""
        query = "SELECT COUNT(*) FROM versions WHERE promoted_at IS NOT NULL"
        params: tuple[str, ...] = ()
        if name is not None:
            query += " AND name = ?"
            params = (name,)
        with self._read() as db:
            (count,) = db.execute(query, params).fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
