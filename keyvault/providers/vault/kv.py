"""Vault / OpenBao KV v2 backend (``hvac``), and Transit keys as server-rotated keys.

Storage: one KV v2 entry per key. Its data is the key's whole stage document::

    {"current":  {"version": "3", "value": "...", "created_at": "...", "request_token": ...},
     "previous": {...} | absent,
     "pending":  {...} | absent,
     "next_version": 4, "environment": "prod", "promoted_at": "..."}

Every write is check-and-set against the KV version just read, so two writers never both
succeed, and KV's own version history is the audit trail. After each write the entry's
``custom_metadata`` is refreshed with the stage pointers, fingerprints and times (no
values) and stamped with the KV version it describes: listing reads metadata only, and a
stamp that lags the entry (a writer died between its two calls, or two metadata writes
crossed) sends that one key back to its data, so a stale index is never believed.

All hvac and requests exceptions are mapped once, in :meth:`VaultProvider._call`; none
escapes and none of their text (which can hold response bodies) is kept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import hvac
import hvac.exceptions as hvac_errors
import requests

from keyvault.actor import current_actor
from keyvault.errors import (
    AuthError,
    BackendUnavailableError,
    ConflictError,
    IntegrityError,
    InvalidKeyName,
    KeyNotFoundError,
    KeyvaultError,
)
from keyvault.model import (
    BrokenKey,
    Claim,
    KeyInfo,
    KeySet,
    KeyVersion,
    ServerKeyInfo,
    Stage,
    VersionInfo,
    VersionRecord,
    key_path,
    utcnow,
    validate_name,
)
from keyvault.providers.base import (
    KeyProvider,
    ServerRotatedKeys,
    check_replace,
    check_rollback,
    claim_decision,
    expect_no_previous,
    expect_version,
)
from keyvault.providers.vault.auth import AppRoleLogin, TokenKeeper
from keyvault.providers.vault.documents import (
    META_PREFIX,
    STAGES,
    claim_of,
    doc_problem,
    index_from_doc,
    iso,
    key_version,
    parse_time,
    records_from_docs,
    stages_from_index,
    version_of,
)
from keyvault.providers.vault.transit import TransitKeys
from keyvault.secret import SecretValue

T = TypeVar("T")


class VaultProvider(KeyProvider, ServerRotatedKeys):
    def __init__(
        self,
        name: str,
        client: hvac.Client,
        *,
        mount: str = "secret",
        prefix: str = "keyvault/",
        token_env: str = "VAULT_TOKEN",  # noqa: S107 - a variable name
        approle: AppRoleLogin | None = None,
        transit_mount: str = "transit",
        transit_keys: tuple[str, ...] = (),
        list_concurrency: int = 16,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.client = client
        self.mount = mount
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.transit = TransitKeys(
            name,
            client,
            self._call,
            mount=transit_mount,
            keys=tuple(transit_keys),
            clock=clock,
        )
        self.list_concurrency = max(1, list_concurrency)
        self._clock = clock
        self._tokens = TokenKeeper(
            client,
            token_env=token_env,
            approle=approle,
            environ=os.environ if environ is None else environ,
            monotonic=monotonic,
        )

    # -- the one error boundary ------------------------------------------------------------

    def _call(self, action: str, path: str, func: Callable[[], T]) -> T:
        try:
            self._tokens.ensure()
            return func()
        except hvac_errors.Forbidden as exc:
            if not self._tokens.relogin():  # with AppRole, an expired token is replaced
                raise self._mapped(exc, action, path) from None
        except Exception as exc:
            raise self._mapped(exc, action, path) from None
        try:
            return func()
        except Exception as exc:
            raise self._mapped(exc, action, path) from None

    def _mapped(self, exc: Exception, action: str, path: str) -> Exception:
        where = f"{self.mount}/{path}" if path else self.mount
        if isinstance(exc, KeyvaultError):
            return exc
        if isinstance(exc, hvac_errors.Forbidden | hvac_errors.Unauthorized):
            return AuthError(f"Vault denied {action} on {where}: permission denied")
        if isinstance(exc, hvac_errors.InvalidPath):
            return KeyNotFoundError(f"not found in Vault: {where}")
        if isinstance(exc, hvac_errors.InvalidRequest) and "check-and-set" in str(exc.errors):
            return ConflictError(f"Vault check-and-set failed on {where}: changed concurrently")
        if isinstance(exc, hvac_errors.VaultDown):
            return BackendUnavailableError(f"Vault is sealed or in maintenance ({action} {where})")
        if isinstance(exc, hvac_errors.RateLimitExceeded):
            return BackendUnavailableError(f"Vault rate limit exceeded ({action} {where})")
        if isinstance(exc, requests.exceptions.RequestException):
            return BackendUnavailableError(
                f"Vault at {self.client.url} is unreachable ({type(exc).__name__} during {action})"
            )
        if isinstance(exc, hvac_errors.VaultError):
            return BackendUnavailableError(
                f"Vault refused {action} on {where} ({type(exc).__name__})"
            )
        return BackendUnavailableError(f"Vault {action} on {where} failed ({type(exc).__name__})")

    # -- documents -------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return key_path(self.prefix, name)

    def _read_doc(self, name: str) -> tuple[dict[str, Any], int]:
        path = self._path(name)
        try:
            response = self._call(
                "read",
                path,
                lambda: self.client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.mount, raise_on_deleted_version=True
                ),
            )
        except KeyNotFoundError:
            raise self.not_found(name) from None
        data = response["data"]
        doc = data.get("data")
        self._check_doc(name, doc)
        return dict(doc), int(data["metadata"]["version"])

    def _check_doc(self, name: str, doc: Any) -> None:
        """A document someone else wrote (`bao kv put`, `bao kv patch`) is an integrity
        error for this key alone, never a raw TypeError and never a silently missing key."""
        problem = doc_problem(doc)
        if problem is not None:
            raise IntegrityError(
                f"key {name!r} in provider {self.name!r}: the entry at "
                f"{self.mount}/{self._path(name)} is not a keyvault document ({problem}); it "
                "was edited outside keyvault: restore a good version (`bao kv rollback`)"
            )

    def _write_doc(self, name: str, doc: dict[str, Any], cas: int) -> KeyInfo:
        path = self._path(name)
        try:
            response = self._call(
                "write",
                path,
                lambda: self.client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=doc, cas=cas, mount_point=self.mount
                ),
            )
        except ConflictError:
            if cas == 0:
                raise self.already_exists(name) from None
            raise ConflictError(f"key {name!r} was changed by another writer; re-read it") from None
        kv_version = int(response["data"]["version"])
        self._write_index(name, doc, kv_version)
        return self._info_from_doc(name, doc)

    def _write_index(self, name: str, doc: dict[str, Any], kv_version: int) -> None:
        path = self._path(name)
        meta = index_from_doc(doc, kv_version)
        self._call(
            "update metadata of",
            path,
            lambda: self.client.secrets.kv.v2.update_metadata(
                path=path, custom_metadata=meta, mount_point=self.mount
            ),
        )

    def _info_from_doc(self, name: str, doc: dict[str, Any]) -> KeyInfo:
        def version_info(stage: Stage) -> VersionInfo | None:
            entry = doc.get(stage.value)
            if not entry:
                return None
            return VersionInfo(
                str(entry["version"]),
                SecretValue(entry["value"]).fingerprint,
                parse_time(entry.get("created_at")),
                entry.get("ref"),
            )

        return self.key_info(
            name,
            {stage: version_info(stage) for stage in STAGES},
            environment=doc.get("environment"),
            promoted_at=parse_time(doc.get("promoted_at")),
            claim=claim_of(doc),
            rolled_back_at=parse_time(doc.get("rolled_back_at")),
        )

    def _entry(
        self,
        doc: dict[str, Any],
        value: SecretValue,
        token: str | None,
        ref: str | None = None,
    ) -> dict[str, Any]:
        version = int(doc.get("next_version", 1))
        doc["next_version"] = version + 1
        entry = {
            "version": str(version),
            "value": value.reveal(),
            "created_at": iso(self._clock()),
            "created_by": current_actor(),
        }
        if token is not None:
            entry["request_token"] = token
        if ref is not None:
            entry["ref"] = ref
        return entry

    # -- reading ---------------------------------------------------------------------------

    def get_keyset(self, name: str) -> KeySet:
        doc, _ = self._read_doc(name)
        current = doc["current"]  # checked when the document was read (doc_problem)
        previous = doc.get("previous")
        keyset = KeySet(
            name,
            key_version(current),
            None if not previous else key_version(previous),
            doc.get("environment"),
        )
        self.record_access(name, keyset.primary.fingerprint)
        return keyset

    def history(self, name: str) -> list[VersionRecord]:
        """Rebuilt from KV's own version history: each document version says which
        version held which stage, when and by whom; a version that leaves every stage was
        retired (or discarded) by the write that dropped it. Versions older than the KV
        history Vault keeps (``max_versions``) are gone from it."""
        path, meta = self._path(name), self._metadata(name)
        docs: list[dict[str, Any]] = []
        for number in sorted(int(v) for v in (meta.get("versions") or {})):
            info = meta["versions"][str(number)]
            if info.get("deletion_time") or info.get("destroyed"):
                continue
            data = self._call(
                "read",
                path,
                lambda n=number: self.client.secrets.kv.v2.read_secret_version(  # type: ignore[misc]
                    path=path, version=n, mount_point=self.mount, raise_on_deleted_version=True
                ),
            )["data"]["data"]
            if doc_problem(data) is None:
                docs.append(data)
        return records_from_docs(docs)

    def get_pending(self, name: str) -> KeyVersion | None:
        doc, _ = self._read_doc(name)
        pending = doc.get("pending")
        if not pending:
            return None
        version = key_version(pending)
        self.record_access(name, version.fingerprint)
        return version

    def describe(self, name: str) -> KeyInfo:
        doc, _ = self._read_doc(name)
        return self._info_from_doc(name, doc)

    def list_names(self) -> list[str]:
        """Walk the prefix recursively (KV lists one folder level per call)."""
        names: list[str] = []
        folders = [""]
        while folders:
            folder = folders.pop()
            path = self.prefix + folder
            try:
                response = self._call(
                    "list",
                    path,
                    lambda p=path: self.client.secrets.kv.v2.list_secrets(  # type: ignore[misc]
                        path=p, mount_point=self.mount
                    ),
                )
            except KeyNotFoundError:
                continue  # an empty folder lists as 404
            for entry in response["data"]["keys"]:
                if entry.endswith("/"):
                    folders.append(folder + entry)
                else:
                    names.append(folder + entry)
        return sorted(names)

    def list_keys(self) -> list[KeyInfo | BrokenKey]:
        names = self.list_names()
        with ThreadPoolExecutor(max_workers=self.list_concurrency) as pool:
            infos = list(pool.map(self._listed, names))
        return [info for info in infos if info is not None]

    def list_keys_sequential(self) -> list[KeyInfo | BrokenKey]:
        """The one-by-one listing, kept for the benchmark's baseline."""
        infos = [self._listed(name) for name in self.list_names()]
        return [info for info in infos if info is not None]

    def _listed(self, name: str) -> KeyInfo | BrokenKey | None:
        """One key's listing row: its info, a BrokenKey for an entry keyvault cannot use
        (malformed, foreign, soft-deleted, a name outside the naming rules), or None when
        it vanished between the folder listing and this read."""
        try:
            validate_name(name)
            return self._info_from_metadata(name)
        except (IntegrityError, InvalidKeyName) as exc:
            return BrokenKey(name, self.name, exc)

    def _info_from_metadata(self, name: str) -> KeyInfo | None:
        path = self._path(name)
        try:
            data = self._metadata(name)
        except KeyNotFoundError:
            return None  # deleted between list and read
        current_version = str(data.get("current_version"))
        latest = (data.get("versions") or {}).get(current_version) or {}
        if latest.get("deletion_time") or latest.get("destroyed"):
            raise IntegrityError(
                f"key {name!r} in provider {self.name!r}: KV version {current_version} at "
                f"{self.mount}/{path} was deleted outside keyvault (`bao kv undelete` restores "
                "a soft delete)"
            )
        meta = data.get("custom_metadata") or {}
        info = None
        if meta.get(META_PREFIX + "kv_version") == current_version:
            indexed = stages_from_index(meta)
            if indexed.get(Stage.CURRENT) is not None:
                info = self.key_info(
                    name,
                    indexed,
                    environment=meta.get(META_PREFIX + "environment"),
                    promoted_at=parse_time(meta.get(META_PREFIX + "promoted_at")),
                    rolled_back_at=parse_time(meta.get(META_PREFIX + "rolled_back_at")),
                )
        if info is not None:
            return info
        try:
            return self.describe(name)  # the index lags the entry: trust the data
        except KeyNotFoundError:
            return None

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
        doc: dict[str, Any] = {"next_version": 1}
        doc["current"] = self._entry(doc, value, None, ref)
        if created_at is not None:
            doc["current"]["created_at"] = iso(created_at)
        if environment is not None:
            doc["environment"] = environment
        return self._write_doc(name, doc, cas=0)

    def stage(
        self,
        name: str,
        value: SecretValue,
        *,
        request_token: str | None = None,
        ref: str | None = None,
        replace: str | None = None,
    ) -> KeyInfo:
        doc, kv_version = self._read_doc(name)
        if request_token is not None and any(
            (doc.get(stage.value) or {}).get("request_token") == request_token for stage in STAGES
        ):
            return self._info_from_doc(name, doc)
        check_replace(name, version_of(doc.get("pending")), replace)
        claim = claim_of(doc)
        if request_token is not None and claim is not None and claim.token == request_token:
            doc.pop("claim")  # the claimed rotation has staged its key
        doc["pending"] = self._entry(doc, value, request_token, ref)
        return self._write_doc(name, doc, cas=kv_version)

    def backend_time(self) -> datetime | None:
        """``server_time_utc`` from ``sys/health`` (unauthenticated)."""
        health = self._call(
            "read health of", "sys/health", lambda: self.client.sys.read_health_status(method="GET")
        )
        stamp = health.get("server_time_utc") if isinstance(health, Mapping) else None
        return None if stamp is None else datetime.fromtimestamp(int(stamp), UTC)

    def claim(
        self,
        name: str,
        *,
        token: str,
        owner: str,
        expected_current: str,
        lease: timedelta,
    ) -> tuple[bool, Claim | None]:
        doc, kv_version = self._read_doc(name)
        if version_of(doc.get("current")) != expected_current or doc.get("pending"):
            return False, None
        now = max(filter(None, (self._clock(), self.backend_time_or_none())))
        current_claim = claim_of(doc)
        held, taken_over = claim_decision(
            current_claim, token=token, owner=owner, now=now, lease=lease
        )
        if not held:
            return False, None
        if current_claim is None or (current_claim.token, current_claim.owner) != (token, owner):
            doc["claim"] = {"token": token, "owner": owner, "at": iso(now)}
            try:
                self._write_doc(name, doc, cas=kv_version)
            except ConflictError:
                return False, None  # another runner claimed (or staged) first
        return True, taken_over

    def release_claim(self, name: str, *, token: str, owner: str) -> None:
        doc, kv_version = self._read_doc(name)
        claim = claim_of(doc)
        if claim is not None and (claim.token, claim.owner) == (token, owner):
            doc.pop("claim")
            self._write_doc(name, doc, cas=kv_version)

    def promote(self, name: str, *, pending_version: str, expected_current: str) -> KeyInfo:
        doc, kv_version = self._read_doc(name)
        pending, current = doc.get("pending"), doc.get("current")
        expect_version(name, "pending", version_of(pending), pending_version)
        expect_version(name, "current", version_of(current), expected_current)
        expect_no_previous(name, version_of(doc.get("previous")))
        doc["previous"], doc["current"] = current, pending
        doc.pop("pending")
        # the later of our clock and the server's: a replica whose clock is behind never
        # dates a promotion early (which would shorten the grace period)
        doc["promoted_at"] = iso(max(filter(None, (self._clock(), self.backend_time_or_none()))))
        doc["promoted_by"] = current_actor()
        doc.pop("rolled_back_at", None)  # a new primary: its age is its own
        return self._write_doc(name, doc, cas=kv_version)

    def rollback(self, name: str, *, expected_current: str, expected_previous: str) -> KeyInfo:
        doc, kv_version = self._read_doc(name)
        current, previous = doc.get("current"), doc.get("previous")
        check_rollback(
            name, version_of(current), version_of(previous), expected_current, expected_previous
        )
        now = iso(max(filter(None, (self._clock(), self.backend_time_or_none()))))
        doc["current"], doc["previous"] = previous, current
        doc["promoted_at"] = now
        doc["promoted_by"] = current_actor()
        doc["rolled_back_at"] = now
        return self._write_doc(name, doc, cas=kv_version)

    def retire(self, name: str, *, expected_previous: str, revoked: bool = True) -> KeyInfo:
        return self._drop_stage(name, Stage.PREVIOUS, expected_previous, revoked)

    def discard_pending(self, name: str, *, pending_version: str) -> KeyInfo:
        return self._drop_stage(name, Stage.PENDING, pending_version)

    def _drop_stage(
        self, name: str, stage: Stage, expected: str, revoked: bool | None = None
    ) -> KeyInfo:
        """Idempotent: a stage already gone is success; another version there is a conflict."""
        doc, kv_version = self._read_doc(name)
        entry = doc.get(stage.value)
        if not entry:
            return self._info_from_doc(name, doc)
        expect_version(name, stage.value, version_of(entry), expected)
        doc.pop(stage.value)
        # the last drop, for the history (KV's own versions keep every earlier one)
        doc["dropped"] = {
            "version": str(entry["version"]),
            "at": iso(self._clock()),
            "by": current_actor(),
            "revoked": revoked,
        }
        return self._write_doc(name, doc, cas=kv_version)

    def delete(self, name: str) -> None:
        self._read_doc(name)
        path = self._path(name)
        self._call(
            "delete",
            path,
            lambda: self.client.secrets.kv.v2.delete_metadata_and_all_versions(
                path=path, mount_point=self.mount
            ),
        )

    def _metadata(self, name: str) -> dict[str, Any]:
        """The KV metadata of a key's entry (versions, times, the custom index)."""
        path = self._path(name)
        return dict(
            self._call(
                "read metadata of",
                path,
                lambda: self.client.secrets.kv.v2.read_secret_metadata(
                    path=path, mount_point=self.mount
                ),
            )["data"]
        )

    def kv_versions(self, name: str) -> int:
        """How many KV versions the entry has: its write history."""
        return int(self._metadata(name)["current_version"])

    def close(self) -> None:
        adapter = getattr(self.client, "adapter", None)
        session = getattr(adapter, "session", None)
        if session is not None:
            session.close()

    # -- Transit: server-rotated keys, a component of their own ----------------------------

    def list_server_keys(self) -> list[ServerKeyInfo]:
        return self.transit.list_server_keys()

    def rotate_server_key(self, name: str) -> ServerKeyInfo:
        return self.transit.rotate_server_key(name)

    def retire_server_key_versions(self, name: str, *, grace: timedelta) -> ServerKeyInfo:
        return self.transit.retire_server_key_versions(name, grace=grace)
