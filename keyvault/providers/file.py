"""The embedded default: an encrypted SQLite file that works on a fresh machine.

Each value is sealed with AES-256-GCM under the store's master keyring, with the key name
and version as associated data. Stages are a column on the version rows with a partial
unique index (one current, one previous, one pending per key), and every write is one
``BEGIN IMMEDIATE`` transaction that checks the stages it expects before moving them, so two
processes promoting the same key serialise on SQLite's write lock and the second one sees
the first one's result: a ConflictError.

Every field a decision reads is authenticated under the master key: each version row
carries an HMAC over all its columns (ciphertext included, so a tampered value is caught
by a listing that never decrypts), and each key row an HMAC over its environment, times and
which version holds which stage. An edited, swapped or forged row is an IntegrityError,
never a new truth. A damaged secondary or pending version spoils only itself: the primary
is still served and the damage is reported.

Retired versions keep their row (version, fingerprint, times) as the audit trail, with
their ciphertext wiped.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from keyvault.access import GENESIS, AccessEvent, Broken, check_chain, current_action
from keyvault.actor import current_actor
from keyvault.crypto import Keyring, Sealed
from keyvault.errors import (
    BackendUnavailableError,
    ConfigError,
    IntegrityError,
    KeyvaultError,
    ReadOnlyError,
)
from keyvault.masterkey import private_dir
from keyvault.model import (
    BrokenKey,
    Claim,
    KeyInfo,
    KeySet,
    KeyVersion,
    Stage,
    VersionInfo,
    VersionRecord,
    utcnow,
    validate_name,
)
from keyvault.providers.base import (
    KeyProvider,
    check_replace,
    check_rollback,
    claim_decision,
    expect_no_previous,
    expect_version,
)
from keyvault.secret import SecretValue

log = logging.getLogger("keyvault.store")

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
    promoted_at TEXT,
    mac TEXT,
    claim_token TEXT,
    claim_owner TEXT,
    claimed_at TEXT,
    rolled_back_at TEXT
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
    mac TEXT,
    created_by TEXT,
    promoted_by TEXT,
    retired_by TEXT,
    revoked INTEGER,
    PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_one_per_stage
    ON versions(name, stage) WHERE stage IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS versions_request_token
    ON versions(name, request_token) WHERE request_token IS NOT NULL;
CREATE TABLE IF NOT EXISTS access_log (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    digest TEXT NOT NULL,
    mac TEXT NOT NULL
);
"""

#: the sealed check value of a store whose rows carry MACs; a v1 value marks a store made
#: before they existed, which is upgraded once, by the first process that can write it
_CHECK_PLAINTEXT = b"keyvault master key check v2: rows authenticated"
_CHECK_PLAINTEXT_V1 = b"keyvault master key check v1"
_CHECK_AAD = b"keyvault/v1\x00check"

_VERSION_COLUMNS = (
    "name, version, stage, key_id, nonce, ciphertext, fingerprint, created_at, promoted_at, "
    "retired_at, request_token, issuer_ref, mac, created_by, promoted_by, retired_by, revoked"
)


class VersionRow(NamedTuple):
    name: str
    version: int
    stage: str | None
    key_id: str
    nonce: bytes
    ciphertext: bytes
    fingerprint: str
    created_at: str | None
    promoted_at: str | None
    retired_at: str | None
    request_token: str | None
    issuer_ref: str | None
    mac: str | None
    created_by: str | None = None
    promoted_by: str | None = None
    retired_by: str | None = None
    revoked: int | None = None

    def mac_input(self) -> bytes:
        """Every column but the MAC; the ciphertext too, so an edited value is caught
        without decrypting it. (The history columns join only once set, so rows MACed
        before they existed still verify.)"""
        fields: tuple[Any, ...] = (*self[:4], len(self.nonce), *self[6:12])
        history = (self.created_by, self.promoted_by, self.retired_by, self.revoked)
        if any(value is not None for value in history):
            fields += history
        return (
            b"keyvault/v1\x00version\x00"
            + repr(fields).encode()
            + b"\x00"
            + bytes(self.nonce)
            + bytes(self.ciphertext)
        )

    def info(self) -> VersionInfo:
        return VersionInfo(
            str(self.version), self.fingerprint, _dt(self.created_at), self.issuer_ref
        )


_KEY_COLUMNS = (
    "name, environment, next_version, promoted_at, mac, claim_token, claim_owner, claimed_at, "
    "rolled_back_at"
)


class KeyRow(msgspec.Struct, frozen=True):
    name: str
    environment: str | None
    next_version: int
    promoted_at: str | None
    mac: str | None
    claim_token: str | None
    claim_owner: str | None
    claimed_at: str | None
    rolled_back_at: str | None
    #: the staged versions (stage -> row), as stored
    stages: dict[str, VersionRow] = field(default_factory=dict)

    @classmethod
    def of(cls, row: Any, stages: dict[str, VersionRow]) -> KeyRow:
        name, environment, next_version, promoted_at, mac, token, owner, claimed, rolled = row
        return cls(
            name, environment, next_version, promoted_at, mac, token, owner, claimed, rolled, stages
        )

    @property
    def claim(self) -> Claim | None:
        if self.claim_token is None or self.claim_owner is None:
            return None
        return Claim(self.claim_token, self.claim_owner, _dt(self.claimed_at))

    def mac_input(self) -> bytes:
        """The key's own fields and which version holds each stage, so a row moved into a
        stage (or a stage emptied) by hand fails even when that row's own MAC is intact."""
        held = tuple(
            (stage.value, self.stages[stage.value].version if stage.value in self.stages else None)
            for stage in Stage
        )
        fields: tuple[Any, ...] = (
            self.name,
            self.environment,
            self.next_version,
            self.promoted_at,
            held,
        )
        if self.claim_token is not None or self.claim_owner is not None:
            fields += (self.claim_token, self.claim_owner, self.claimed_at)
        if self.rolled_back_at is not None:
            fields += ("rolled_back_at", self.rolled_back_at)
        return b"keyvault/v1\x00key\x00" + repr(fields).encode()


def missing_store(path: Path) -> ConfigError:
    return ConfigError(
        f"store {path} does not exist: run `keyvault init` to create it (with an existing "
        "config: `keyvault --config FILE init`), or point the provider's `path` at the store"
    )


def _aad(name: str, version: int) -> bytes:
    return f"keyvault/v1\x00{name}\x00{version}".encode()


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _version_of(row: VersionRow | None) -> str | None:
    return None if row is None else str(row.version)


class FileProvider(KeyProvider):
    """Keys in one SQLite file, sealed and authenticated under a master keyring."""

    keeps_access_log = True

    def __init__(
        self,
        name: str,
        path: Path,
        keyring: Keyring,
        *,
        clock: Callable[[], datetime] = utcnow,
        busy_timeout: float = 10.0,
        create: bool = False,
    ) -> None:
        """Open the store at ``path``. Only ``create=True`` (``keyvault init``) makes a new
        one: a store that vanished is an error, never silently replaced by an empty one.
        A store in a read-only place opens read-only: reads work, writes say why not."""
        self.name = name
        self.path = path
        self._keyring = keyring
        self._clock = clock
        self._lock = threading.RLock()
        self.read_only = False
        self._warned_read_only_log = False
        #: a store from before row MACs that could not be upgraded (opened read-only)
        self._legacy = False
        if create:
            self._create_file()
        elif not path.exists():
            raise missing_store(path)
        self._db = self._connect(busy_timeout)
        try:
            self._open_store(create)
        except BaseException:
            self._db.close()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _create_file(self) -> None:
        try:
            private_dir(self.path.parent)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise self._os_error("create", exc) from None

    def _os_error(self, action: str, exc: OSError) -> KeyvaultError:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return ReadOnlyError(
                f"cannot {action} store {self.path}: {exc.strerror} (check the permissions of "
                "the file and its directory)"
            )
        return BackendUnavailableError(f"cannot {action} store {self.path}: {exc.strerror}")

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
        try:
            if writable:
                db = sqlite3.connect(
                    self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
                )
            else:
                # no journal or lock files can be made here: read what is committed
                self.read_only = True
                db = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro&immutable=1",
                    uri=True,
                    timeout=busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            db.execute("PRAGMA foreign_keys = ON")
            return db
        except sqlite3.Error as exc:
            raise self._mapped(exc) from None

    def _open_store(self, create: bool) -> None:
        try:
            if not self.read_only:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.executescript(SCHEMA) if create else self._upgrade_schema()
        except sqlite3.Error as exc:
            raise self._mapped(exc) from None
        self._check_master_key(create)

    def _upgrade_schema(self) -> None:
        """Columns added since the first stores were made; nothing else changes shape."""
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
        if "versions" not in tables or "keys" not in tables:
            raise IntegrityError(f"store {self.path} is not a keyvault store")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(versions)")}
        if "issuer_ref" not in columns:
            self._db.execute("ALTER TABLE versions ADD COLUMN issuer_ref TEXT")
        for column, kind in (
            ("mac", "TEXT"),
            ("created_by", "TEXT"),
            ("promoted_by", "TEXT"),
            ("retired_by", "TEXT"),
            ("revoked", "INTEGER"),
        ):
            if column not in columns:
                self._db.execute(f"ALTER TABLE versions ADD COLUMN {column} {kind}")
        self._db.execute(SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS access_log") :])
        key_columns = {row[1] for row in self._db.execute("PRAGMA table_info(keys)")}
        for column in ("mac", "claim_token", "claim_owner", "claimed_at", "rolled_back_at"):
            if column not in key_columns:
                self._db.execute(f"ALTER TABLE keys ADD COLUMN {column} TEXT")

    def _check_master_key(self, create: bool) -> None:
        """Fail at open, not at first read, when the master key is not this store's; and
        upgrade a store from before row MACs, once."""
        with self._read() as db:
            rows = {
                row[0]: Sealed(row[0], row[1], row[2])
                for row in db.execute("SELECT key_id, nonce, ciphertext FROM check_values")
            }
        known = [kid for kid in self._keyring.key_ids() if kid in rows]
        if not rows and not create:
            raise IntegrityError(f"store {self.path} has no master key check: not a keyvault store")
        if rows and not known:
            raise IntegrityError(
                f"wrong master key for store {self.path}: it was sealed with "
                f"{', '.join(sorted(rows))}, the configured key is "
                f"{', '.join(self._keyring.key_ids())}"
            )
        plaintexts = {kid: self._keyring.open(rows[kid], _CHECK_AAD) for kid in known}
        if any(text == _CHECK_PLAINTEXT_V1 for text in plaintexts.values()):
            if any(text == _CHECK_PLAINTEXT for text in plaintexts.values()):
                raise IntegrityError(f"store {self.path} has mixed check values (tampered?)")
            if self.read_only:
                self._legacy = True
                log.warning("store %s predates row MACs and is read-only: not verified", self.path)
                return
            self._authenticate_legacy_rows(known)
            return
        if any(text != _CHECK_PLAINTEXT for text in plaintexts.values()):
            raise IntegrityError(f"store {self.path} has an unknown check value")
        if self._keyring.primary.key_id not in rows and not self.read_only:
            with self._write() as db:
                self._put_check_value(db, self._keyring.primary.key_id)

    def _put_check_value(self, db: sqlite3.Connection, key_id: str) -> None:
        sealed = self._keyring.seal_with(key_id, _CHECK_PLAINTEXT, _CHECK_AAD)
        db.execute(
            "INSERT OR REPLACE INTO check_values VALUES (?, ?, ?)",
            (sealed.key_id, sealed.nonce, sealed.ciphertext),
        )

    def _authenticate_legacy_rows(self, known: list[str]) -> None:
        """A store from before row MACs: its rows are taken as they are, once, and MACed;
        the v2 check value then says every later open must verify them."""
        with self._write() as db:
            for row in db.execute(f"SELECT {_VERSION_COLUMNS} FROM versions").fetchall():
                self._tag_version(db, VersionRow._make(row))
            for (name,) in db.execute("SELECT name FROM keys").fetchall():
                self._tag_key(db, name)
            for kid in known:
                self._put_check_value(db, kid)
        log.info("store %s: rows authenticated under %s", self.path, self._keyring.primary.key_id)

    # -- plumbing --------------------------------------------------------------------------

    def _mapped(self, exc: sqlite3.Error) -> KeyvaultError:
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError):
            if "locked" in text or "busy" in text:
                return BackendUnavailableError(f"store {self.path} is locked by another writer")
            if "readonly" in text or "read-only" in text:
                return ReadOnlyError(
                    f"store {self.path} is read-only here (file or directory permissions): "
                    "reads work, changes need write access"
                )
            if "unable to open" in text:
                return BackendUnavailableError(f"store {self.path} cannot be opened: {text}")
            return BackendUnavailableError(f"store {self.path} cannot be used: {text}")
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
            return IntegrityError(f"store {self.path} is not a keyvault store or is corrupt")
        return BackendUnavailableError(f"store {self.path}: {text}")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every SELECT inside sees the same committed snapshot, so a
        key row and its version rows always come from one write (a torn read would fail
        their MACs)."""
        with self._lock:
            try:
                self._db.execute("BEGIN")
            except sqlite3.Error as exc:
                raise self._mapped(exc) from None
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise self._mapped(exc) from None
            finally:
                self._db.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front, so the reads inside
        it see the state no other writer can change before we commit."""
        if self.read_only:
            raise ReadOnlyError(
                f"store {self.path} is read-only here (file or directory permissions): reads "
                "work, changes need write access"
            )
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._mapped(exc) from None
            try:
                yield self._db
            except BaseException as exc:
                self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._mapped(exc) from None
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise self._mapped(exc) from None

    # -- authentication --------------------------------------------------------------------

    def _tag_version(self, db: sqlite3.Connection, row: VersionRow) -> None:
        db.execute(
            "UPDATE versions SET mac = ? WHERE name = ? AND version = ?",
            (self._keyring.tag(row.mac_input()), row.name, row.version),
        )

    def _tag_key(self, db: sqlite3.Connection, name: str) -> None:
        key = self._key_row(db, name)
        assert key is not None
        db.execute(
            "UPDATE keys SET mac = ? WHERE name = ?", (self._keyring.tag(key.mac_input()), name)
        )

    def _retag(self, db: sqlite3.Connection, name: str, *versions: int) -> None:
        """After a write: MAC the rows it changed (read back in the same transaction)."""
        for version in versions:
            row = db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = ? AND version = ?",
                (name, version),
            ).fetchone()
            self._tag_version(db, VersionRow._make(row))
        self._tag_key(db, name)

    def _key_row(self, db: sqlite3.Connection, name: str) -> KeyRow | None:
        found = db.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE name = ?", (name,)).fetchone()
        if found is None:
            return None
        stages = {
            row[2]: VersionRow._make(row)
            for row in db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = ? AND stage IS NOT NULL",
                (name,),
            )
        }
        return KeyRow.of(found, stages)

    def _verified(self, key: KeyRow) -> dict[str, str]:
        """Check a key's MACs. A bad key row or primary is an IntegrityError for the whole
        key; a bad secondary or pending version is returned (stage -> problem) so the
        primary can still be served."""
        if self._legacy:
            return {}
        if not self._keyring.verify(key.mac_input(), key.mac):
            raise IntegrityError(
                f"key {key.name!r} in store {self.path} failed authentication: its record was "
                "tampered with (edited outside keyvault)"
            )
        damaged: dict[str, str] = {}
        for stage, row in key.stages.items():
            if not self._keyring.verify(row.mac_input(), row.mac):
                if stage == Stage.CURRENT.value:
                    raise IntegrityError(
                        f"key {key.name!r} in store {self.path}: the current version "
                        f"{row.version} failed authentication: tampered with (edited outside "
                        "keyvault)"
                    )
                damaged[stage] = f"{stage} version {row.version} failed authentication"
        if Stage.CURRENT.value not in key.stages:
            raise IntegrityError(f"key {key.name!r} in store {self.path} has no current version")
        return damaged

    def _load(self, db: sqlite3.Connection, name: str) -> tuple[KeyRow, dict[str, str]]:
        key = self._key_row(db, name)
        if key is None:
            raise self.not_found(name)
        return key, self._verified(key)

    def _refuse_damaged(self, key: KeyRow, damaged: dict[str, str], *stages: Stage) -> None:
        for stage in stages:
            if stage.value in damaged:
                raise IntegrityError(
                    f"key {key.name!r} in store {self.path}: {damaged[stage.value]}; nothing "
                    "was changed (retire or discard that version, or restore the store)"
                )

    def _decrypt(self, row: VersionRow) -> KeyVersion:
        plaintext = self._keyring.open(
            Sealed(row.key_id, row.nonce, row.ciphertext), _aad(row.name, row.version)
        )
        secret = SecretValue(plaintext.decode("utf-8"))
        return KeyVersion(str(row.version), secret, _dt(row.created_at), row.issuer_ref)

    def _insert_version(
        self,
        db: sqlite3.Connection,
        key: KeyRow,
        value: SecretValue,
        stage: Stage,
        created_at: datetime,
        request_token: str | None = None,
        ref: str | None = None,
    ) -> int:
        version = key.next_version
        sealed = self._keyring.seal(value.reveal().encode("utf-8"), _aad(key.name, version))
        db.execute(
            "INSERT INTO versions (name, version, stage, key_id, nonce, ciphertext, "
            "fingerprint, created_at, request_token, issuer_ref, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key.name,
                version,
                stage.value,
                sealed.key_id,
                sealed.nonce,
                sealed.ciphertext,
                value.fingerprint,
                _ts(created_at),
                request_token,
                ref,
                current_actor(),
            ),
        )
        db.execute("UPDATE keys SET next_version = ? WHERE name = ?", (version + 1, key.name))
        return version

    def _retire_row(
        self, db: sqlite3.Connection, name: str, version: int, revoked: bool | None = None
    ) -> None:
        db.execute(
            "UPDATE versions SET stage = NULL, retired_at = ?, retired_by = ?, revoked = ?, "
            "nonce = X'', ciphertext = X'' WHERE name = ? AND version = ?",
            (
                _ts(self._clock()),
                current_actor(),
                None if revoked is None else int(revoked),
                name,
                version,
            ),
        )

    def _info(self, key: KeyRow, damaged: dict[str, str]) -> KeyInfo:
        # a damaged version is still listed (named in ``problem``), so an operator can see
        # and retire it; its value is never served
        return self.key_info(
            key.name,
            {Stage(stage): row.info() for stage, row in key.stages.items()},
            environment=key.environment,
            promoted_at=_dt(key.promoted_at),
            problem="; ".join(damaged.values()) or None,
            claim=key.claim,
            rolled_back_at=_dt(key.rolled_back_at),
            missing=IntegrityError,
        )

    # -- reading ---------------------------------------------------------------------------

    def get_keyset(self, name: str) -> KeySet:
        with self._read() as db:
            key, damaged = self._load(db, name)
        primary = self._decrypt(key.stages[Stage.CURRENT.value])
        secondary = None
        previous = key.stages.get(Stage.PREVIOUS.value)
        if previous is not None and Stage.PREVIOUS.value not in damaged:
            try:
                secondary = self._decrypt(previous)
            except IntegrityError:
                damaged[Stage.PREVIOUS.value] = "previous version failed to decrypt"
        if Stage.PREVIOUS.value in damaged:
            log.warning(
                "key %s in store %s: %s; serving the primary alone",
                name,
                self.path,
                damaged[Stage.PREVIOUS.value],
            )
        self._record_access(name, primary.fingerprint)
        return KeySet(name, primary, secondary, key.environment)

    def history(self, name: str) -> list[VersionRecord]:
        """Every row of the key, retired ones included (their ciphertext is wiped, their
        facts kept), each checked against its MAC."""
        with self._read() as db:
            self._load(db, name)  # the key row and stages verified, or not found
            rows = [
                VersionRow._make(row)
                for row in db.execute(
                    f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = ? ORDER BY version DESC",
                    (name,),
                )
            ]
        records = []
        for row in rows:
            if not self._legacy and not self._keyring.verify(row.mac_input(), row.mac):
                raise IntegrityError(
                    f"key {name!r} in store {self.path}: version {row.version} failed "
                    "authentication: tampered with (edited outside keyvault)"
                )
            records.append(
                VersionRecord(
                    version=str(row.version),
                    fingerprint=row.fingerprint,
                    stage=None if row.stage is None else Stage(row.stage),
                    created_at=_dt(row.created_at),
                    promoted_at=_dt(row.promoted_at),
                    retired_at=_dt(row.retired_at),
                    revoked=None if row.revoked is None else bool(row.revoked),
                    ref=row.issuer_ref,
                    created_by=row.created_by,
                    promoted_by=row.promoted_by,
                    retired_by=row.retired_by,
                )
            )
        return records

    def get_pending(self, name: str) -> KeyVersion | None:
        with self._read() as db:
            key, damaged = self._load(db, name)
        self._refuse_damaged(key, damaged, Stage.PENDING)
        row = key.stages.get(Stage.PENDING.value)
        if row is None:
            return None
        pending = self._decrypt(row)
        self._record_access(name, pending.fingerprint)
        return pending

    def describe(self, name: str) -> KeyInfo:
        with self._read() as db:
            return self._info(*self._load(db, name))

    def list_keys(self) -> list[KeyInfo | BrokenKey]:
        return list(self.iter_keys())

    def iter_keys(self) -> Iterator[KeyInfo | BrokenKey]:
        """One snapshot, streamed: keys and their staged versions, both in name order,
        merged as they are read, so memory does not grow with the fleet."""
        with self._read() as db:
            keys = db.execute(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY name")
            staged = db.cursor().execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE stage IS NOT NULL ORDER BY name"
            )
            pending_row = staged.fetchone()
            for row in keys:
                name = row[0]
                stages: dict[str, VersionRow] = {}
                while pending_row is not None and pending_row[0] <= name:
                    if pending_row[0] == name:
                        stages[pending_row[2]] = VersionRow._make(pending_row)
                    pending_row = staged.fetchone()
                key = KeyRow.of(row, stages)
                try:
                    yield self._info(key, self._verified(key))
                except IntegrityError as exc:
                    yield BrokenKey(name, self.name, exc)

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
            self._insert_key(db, name, value, environment, created_at, ref)
            return self._info(*self._load(db, name))

    def _insert_key(
        self,
        db: sqlite3.Connection,
        name: str,
        value: SecretValue,
        environment: str | None,
        created_at: datetime | None,
        ref: str | None = None,
    ) -> None:
        validate_name(name)
        if self._key_row(db, name) is not None:
            raise self.already_exists(name)
        db.execute(
            "INSERT INTO keys (name, environment, next_version) VALUES (?, ?, 1)",
            (name, environment),
        )
        key = self._key_row(db, name)
        assert key is not None
        version = self._insert_version(
            db, key, value, Stage.CURRENT, created_at or self._clock(), ref=ref
        )
        self._retag(db, name, version)

    def create_many(
        self,
        keys: Iterable[tuple[str, SecretValue, datetime | None, str | None]],
        *,
        batch: int = 1000,
    ) -> int:
        """Create many keys — ``(name, value, created_at, environment)`` — ``batch`` per
        transaction: an import from another system, or a fleet for a benchmark. Each is
        checked and sealed as :meth:`create` does; an existing name stops the import with
        KeyExistsError after the batches before it."""
        created, pending = 0, []
        for item in keys:
            pending.append(item)
            if len(pending) >= batch:
                created += self._create_batch(pending)
                pending = []
        return created + (self._create_batch(pending) if pending else 0)

    def _create_batch(
        self, items: list[tuple[str, SecretValue, datetime | None, str | None]]
    ) -> int:
        with self._write() as db:
            for name, value, created_at, environment in items:
                self._insert_key(db, name, value, environment, created_at)
        return len(items)

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
            key, damaged = self._load(db, name)
            if request_token is not None:
                done = db.execute(
                    "SELECT 1 FROM versions WHERE name = ? AND request_token = ?",
                    (name, request_token),
                ).fetchone()
                if done:
                    return self._info(key, damaged)
            pending = key.stages.get(Stage.PENDING.value)
            check_replace(name, _version_of(pending), replace)
            changed = []
            if pending is not None:
                self._retire_row(db, name, pending.version)
                changed.append(pending.version)
            version = self._insert_version(
                db, key, value, Stage.PENDING, self._clock(), request_token, ref
            )
            if request_token is not None and key.claim_token == request_token:
                self._set_claim(db, name, None)  # the claimed rotation has staged its key
            self._retag(db, name, *changed, version)
            return self._info(*self._load(db, name))

    def claim(
        self,
        name: str,
        *,
        token: str,
        owner: str,
        expected_current: str,
        lease: timedelta,
    ) -> tuple[bool, Claim | None]:
        with self._write() as db:
            key, _damaged = self._load(db, name)
            current = key.stages.get(Stage.CURRENT.value)
            if _version_of(current) != expected_current or Stage.PENDING.value in key.stages:
                return False, None
            held, taken_over = claim_decision(
                key.claim, token=token, owner=owner, now=self._clock(), lease=lease
            )
            if held and key.claim != Claim(token, owner, _dt(key.claimed_at)):
                self._set_claim(db, name, Claim(token, owner, self._clock()))
                self._tag_key(db, name)
            return held, taken_over

    def release_claim(self, name: str, *, token: str, owner: str) -> None:
        with self._write() as db:
            key, _damaged = self._load(db, name)
            if key.claim_token == token and key.claim_owner == owner:
                self._set_claim(db, name, None)
                self._tag_key(db, name)

    def _set_claim(self, db: sqlite3.Connection, name: str, claim: Claim | None) -> None:
        db.execute(
            "UPDATE keys SET claim_token = ?, claim_owner = ?, claimed_at = ? WHERE name = ?",
            (
                None if claim is None else claim.token,
                None if claim is None else claim.owner,
                None if claim is None else _ts(claim.claimed_at),
                name,
            ),
        )

    def promote(self, name: str, *, pending_version: str, expected_current: str) -> KeyInfo:
        with self._write() as db:
            key, damaged = self._load(db, name)
            self._refuse_damaged(key, damaged, Stage.PENDING, Stage.PREVIOUS)
            pending = key.stages.get(Stage.PENDING.value)
            current = key.stages.get(Stage.CURRENT.value)
            expect_version(name, "pending", _version_of(pending), pending_version)
            expect_version(name, "current", _version_of(current), expected_current)
            expect_no_previous(name, _version_of(key.stages.get(Stage.PREVIOUS.value)))
            assert pending is not None and current is not None
            now = _ts(self._clock())
            db.execute(
                "UPDATE versions SET stage = 'previous' WHERE name = ? AND version = ?",
                (name, current.version),
            )
            db.execute(
                "UPDATE versions SET stage = 'current', promoted_at = ?, promoted_by = ? "
                "WHERE name = ? AND version = ?",
                (now, current_actor(), name, pending.version),
            )
            db.execute(
                "UPDATE keys SET promoted_at = ?, rolled_back_at = NULL WHERE name = ?",
                (now, name),
            )
            self._retag(db, name, current.version, pending.version)
            return self._info(*self._load(db, name))

    def rollback(self, name: str, *, expected_current: str, expected_previous: str) -> KeyInfo:
        with self._write() as db:
            key, damaged = self._load(db, name)
            self._refuse_damaged(key, damaged, Stage.PREVIOUS)
            current = key.stages.get(Stage.CURRENT.value)
            previous = key.stages.get(Stage.PREVIOUS.value)
            check_rollback(
                name,
                _version_of(current),
                _version_of(previous),
                expected_current,
                expected_previous,
            )
            assert current is not None and previous is not None
            now = _ts(self._clock())
            # through a free stage name: the one-per-stage index forbids a moment with two
            db.execute(
                "UPDATE versions SET stage = NULL WHERE name = ? AND version = ?",
                (name, current.version),
            )
            db.execute(
                "UPDATE versions SET stage = 'current', promoted_at = ?, promoted_by = ? "
                "WHERE name = ? AND version = ?",
                (now, current_actor(), name, previous.version),
            )
            db.execute(
                "UPDATE versions SET stage = 'previous' WHERE name = ? AND version = ?",
                (name, current.version),
            )
            db.execute(
                "UPDATE keys SET promoted_at = ?, rolled_back_at = ? WHERE name = ?",
                (now, now, name),
            )
            self._retag(db, name, current.version, previous.version)
            return self._info(*self._load(db, name))

    def retire(self, name: str, *, expected_previous: str, revoked: bool = True) -> KeyInfo:
        return self._drop_stage(name, Stage.PREVIOUS, expected_previous, revoked)

    def discard_pending(self, name: str, *, pending_version: str) -> KeyInfo:
        return self._drop_stage(name, Stage.PENDING, pending_version)

    def _drop_stage(
        self, name: str, stage: Stage, expected: str, revoked: bool | None = None
    ) -> KeyInfo:
        """Idempotent: a stage already gone is success; another version there is a conflict.
        A damaged version may be dropped too: that is how an operator gets rid of it."""
        with self._write() as db:
            key, _damaged = self._load(db, name)
            row = key.stages.get(stage.value)
            if row is not None:
                expect_version(name, stage.value, _version_of(row), expected)
                self._retire_row(db, name, row.version, revoked)
                self._retag(db, name, row.version)
            return self._info(*self._load(db, name))

    def delete(self, name: str) -> None:
        with self._write() as db:
            if self._key_row(db, name) is None:
                raise self.not_found(name)
            db.execute("DELETE FROM versions WHERE name = ?", (name,))
            db.execute("DELETE FROM keys WHERE name = ?", (name,))

    # -- the access log --------------------------------------------------------------------

    def _record_access(self, name: str, fingerprint: str) -> None:
        """Append one event to the chain (see :mod:`keyvault.access`); a read-only store
        cannot, and says so once."""
        if self.read_only:
            if not self._warned_read_only_log:
                log.warning("store %s is read-only: reads are not in its access log", self.path)
                self._warned_read_only_log = True
            return
        at = self._clock()
        with self._write() as db:
            last = db.execute("SELECT seq, digest FROM access_log ORDER BY seq DESC LIMIT 1")
            seq, previous = last.fetchone() or (0, GENESIS)
            event = AccessEvent(seq + 1, at, name, fingerprint, current_action(), current_actor())
            digest = event.digest(previous)
            db.execute(
                "INSERT INTO access_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (event.seq, at.isoformat(), name, fingerprint, event.action, event.actor, digest,
                 self._keyring.tag(digest.encode())),
            )  # fmt: skip
            head = self._keyring.tag(f"head:{event.seq}:{digest}".encode())
            db.execute(
                "INSERT OR REPLACE INTO meta (k, v) VALUES ('access_head', ?)",
                (f"{event.seq} {head}",),
            )

    def _access_rows(self) -> tuple[list[tuple[AccessEvent, str, str]], str | None]:
        with self._read() as db:
            rows = db.execute(
                "SELECT seq, at, key, fingerprint, action, actor, digest, mac FROM access_log "
                "ORDER BY seq"
            ).fetchall()
            head = db.execute("SELECT v FROM meta WHERE k = 'access_head'").fetchone()
        events = [
            (AccessEvent(r[0], datetime.fromisoformat(r[1]), r[2], r[3], r[4], r[5], self.name),
             r[6], r[7])
            for r in rows
        ]  # fmt: skip
        return events, None if head is None else str(head[0])

    def own_access_log(self) -> StoreAccessLog:
        """The store's own log, as an :class:`~keyvault.access.AccessLog`."""
        return StoreAccessLog(self)

    def access_events(self) -> list[AccessEvent]:
        return [event for event, _, _ in self._access_rows()[0]]

    def verify_access(self) -> Broken | None:
        rows, head = self._access_rows()
        head_seq = None
        if head is not None:
            seq, _, tag = head.partition(" ")
            last = rows[int(seq) - 1][1] if seq.isdigit() and 0 < int(seq) <= len(rows) else ""
            if not self._keyring.verify(f"head:{seq}:{last}".encode(), tag):
                return Broken(int(seq) if seq.isdigit() else 0, "the log's head does not hold")
            head_seq = int(seq)
        elif rows:
            return Broken(1, "the log has rows but no head (edited?)")
        return check_chain(rows, lambda d, m: self._keyring.verify(d.encode(), m), head_seq)

    # -- master key rotation ---------------------------------------------------------------

    def sealed_with(self) -> dict[str, int]:
        """How many live values each master key seals (retired rows hold no ciphertext)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT key_id, COUNT(*) FROM versions WHERE length(ciphertext) > 0 GROUP BY key_id"
            ).fetchall()
        return {key_id: int(count) for key_id, count in rows}

    def _not_primary_sql(self) -> tuple[str, tuple[str, ...]]:
        """Keys with a value sealed, or a row MACed, by a master key other than the primary."""
        primary = self._keyring.primary.key_id
        like = primary + ":%"
        return (
            "SELECT name FROM versions WHERE (key_id != ? AND length(ciphertext) > 0) "
            "OR mac IS NULL OR mac NOT LIKE ? "
            "UNION SELECT name FROM keys WHERE mac IS NULL OR mac NOT LIKE ?",
            (primary, like, like),
        )

    def reseal(self, batch: int = 100) -> int:
        """Re-encrypt every value not sealed by the primary master key, and re-MAC every
        row under it, ``batch`` keys per transaction, so an interrupted run loses nothing and
        the next one carries on. Every row is verified under its old key first: a tampered
        row stops the rekey instead of being blessed by the new key."""
        query, params = self._not_primary_sql()
        total = 0
        while True:
            with self._write() as db:
                names = [row[0] for row in db.execute(f"{query} LIMIT {int(batch)}", params)]
                for name in names:
                    total += self._reseal_key(db, name)
            if len(names) < batch:
                self._reseal_access()
                return total

    def _reseal_access(self) -> None:
        """The access log's MACs under the new master key, after checking the chain under
        the old one: a broken log stops the rekey instead of being blessed."""
        broken = self.verify_access()
        if broken is not None:
            raise IntegrityError(
                f"store {self.path}: the access log is broken at row {broken.seq} "
                f"({broken.reason}); rekey stopped"
            )
        with self._write() as db:
            rows = db.execute("SELECT seq, digest FROM access_log ORDER BY seq").fetchall()
            for seq, digest in rows:
                db.execute(
                    "UPDATE access_log SET mac = ? WHERE seq = ?",
                    (self._keyring.tag(digest.encode()), seq),
                )
            if rows:
                seq, digest = rows[-1]
                head = self._keyring.tag(f"head:{seq}:{digest}".encode())
                db.execute(
                    "INSERT OR REPLACE INTO meta (k, v) VALUES ('access_head', ?)",
                    (f"{seq} {head}",),
                )

    def _reseal_key(self, db: sqlite3.Connection, name: str) -> int:
        _key, damaged = self._load(db, name)
        if damaged:
            raise IntegrityError(f"key {name!r}: {'; '.join(damaged.values())}; rekey stopped")
        rows = [
            VersionRow._make(row)
            for row in db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = ?", (name,)
            )
        ]
        resealed = 0
        for row in rows:
            if row.stage is None and not self._keyring.verify(row.mac_input(), row.mac):
                raise IntegrityError(
                    f"key {name!r}: retired version {row.version} failed authentication; "
                    "rekey stopped"
                )
            if row.ciphertext and row.key_id != self._keyring.primary.key_id:
                aad = _aad(name, row.version)
                plaintext = self._keyring.open(Sealed(row.key_id, row.nonce, row.ciphertext), aad)
                sealed = self._keyring.seal(plaintext, aad)
                db.execute(
                    "UPDATE versions SET key_id = ?, nonce = ?, ciphertext = ? "
                    "WHERE name = ? AND version = ?",
                    (sealed.key_id, sealed.nonce, sealed.ciphertext, name, row.version),
                )
                resealed += 1
        self._retag(db, name, *(row.version for row in rows))
        return resealed

    def forget_master_keys(self) -> None:
        """After a reseal: the store no longer recognises any master key but the primary."""
        query, params = self._not_primary_sql()
        with self._write() as db:
            left = db.execute(f"SELECT COUNT(*) FROM ({query})", params).fetchone()[0]
            if left:
                raise IntegrityError(f"{left} keys are still sealed by old master keys")
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


class StoreAccessLog:
    """The file store's access log table, read through the common interface."""

    def __init__(self, store: FileProvider) -> None:
        self.store = store

    def events(self) -> list[AccessEvent]:
        return self.store.access_events()

    def verify(self) -> Broken | None:
        return self.store.verify_access()
