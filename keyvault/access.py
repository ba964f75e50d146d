"""The access log: every read of a key's value through keyvault, as a chain nobody can edit
unseen.

Each event (time, key, fingerprint, action, actor) is hashed together with the digest of
the one before it, and the digest is MACed under a secret key, so deleting, editing or
reordering an event breaks the chain at that row, and a new head that skips rows cannot be
forged without the key. The embedded store keeps its log in its own file (a table, MACed
under the master key); for Vault and AWS, whose own audit trails (Vault audit devices,
CloudTrail) already record reads, a local chained file can be configured too.

Callers say why they read (``with reading("reveal"): ...``); the default is ``read``.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

import msgspec

from keyvault.errors import ConfigError, IntegrityError

_ACTION: contextvars.ContextVar[str] = contextvars.ContextVar("keyvault_access", default="read")
GENESIS = "0" * 64


@contextlib.contextmanager
def reading(action: str) -> Iterator[None]:
    """Mark the reads inside as ``action`` (reveal, run, client, test, revoke, scan...)."""
    token = _ACTION.set(action)
    try:
        yield
    finally:
        _ACTION.reset(token)


def current_action() -> str:
    return _ACTION.get()


class AccessEvent(msgspec.Struct, frozen=True):
    seq: int
    at: datetime
    key: str
    fingerprint: str
    action: str
    actor: str
    provider: str = ""

    def digest(self, previous: str) -> str:
        fields = (
            self.seq,
            self.at.isoformat(),
            self.key,
            self.fingerprint,
            self.action,
            self.actor,
        )
        return hashlib.sha256(previous.encode() + repr(fields).encode()).hexdigest()


class Broken(msgspec.Struct, frozen=True):
    """Where a chain stops holding: the first bad row, and why."""

    seq: int
    reason: str


class AccessLog(Protocol):
    """A log as an auditor reads it."""

    def events(self) -> list[AccessEvent]: ...

    def verify(self) -> Broken | None: ...


def check_chain(
    rows: list[tuple[AccessEvent, str, str]], mac_ok: Callable[[str, str], bool], head: int | None
) -> Broken | None:
    """Walk ``(event, digest, mac)`` rows in order: each digest must follow from the one
    before, each MAC must hold, the sequence must have no gap, and the last row must be the
    recorded head (so trailing rows cannot be cut off)."""
    previous, expected_seq = GENESIS, 1
    for event, digest, mac in rows:
        if event.seq != expected_seq:
            return Broken(expected_seq, f"row {expected_seq} is missing (deleted?)")
        if event.digest(previous) != digest:
            return Broken(event.seq, "its contents do not match its digest (edited or reordered)")
        if not mac_ok(digest, mac):
            return Broken(event.seq, "its MAC does not hold (forged)")
        previous, expected_seq = digest, expected_seq + 1
    if head is not None and head != expected_seq - 1:
        return Broken(expected_seq, f"the log ends at row {expected_seq - 1}, its head says {head}")
    return None


class ChainedFile:
    """A local JSON-lines access log, HMAC-chained under a 32-byte key (for Vault and AWS
    providers, where configured). A head file records the last row."""

    def __init__(self, path: Path, key: bytes, *, clock: Callable[[], datetime]) -> None:
        if len(key) < 32:
            raise ConfigError("the access log's MAC key must be at least 32 bytes")
        self.path = path
        self._key = key
        self._clock = clock
        self._lock = threading.Lock()

    def _mac(self, digest: str) -> str:
        return hmac.new(self._key, digest.encode(), hashlib.sha256).hexdigest()

    def _head_path(self) -> Path:
        return self.path.with_name(self.path.name + ".head")

    def _rows(self) -> list[tuple[AccessEvent, str, str]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                data = json.loads(line)
                event = AccessEvent(
                    int(data["seq"]),
                    datetime.fromisoformat(data["at"]),
                    data["key"],
                    data["fingerprint"],
                    data["action"],
                    data["actor"],
                    data.get("provider", ""),
                )
                rows.append((event, str(data["digest"]), str(data["mac"])))
            except (ValueError, KeyError, TypeError):
                raise IntegrityError(f"access log {self.path}: a line is not an event") from None
        return rows

    def append(self, key: str, fingerprint: str, at: datetime, *, provider: str = "") -> None:
        from keyvault.actor import current_actor

        with self._lock:
            rows = self._rows()
            previous = rows[-1][1] if rows else GENESIS
            event = AccessEvent(
                len(rows) + 1, at, key, fingerprint, current_action(), current_actor(), provider
            )
            digest = event.digest(previous)
            line = {
                "seq": event.seq,
                "at": at.isoformat(),
                "key": key,
                "fingerprint": fingerprint,
                "action": event.action,
                "actor": event.actor,
                "provider": provider,
                "digest": digest,
                "mac": self._mac(digest),
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps(line) + "\n")
            head = f"{event.seq} {self._mac(f'head:{event.seq}:{digest}')}"
            self._head_path().write_text(head)

    def events(self) -> list[AccessEvent]:
        return [event for event, _, _ in self._rows()]

    def verify(self) -> Broken | None:
        rows = self._rows()
        head = None
        if self._head_path().exists():
            seq, _, mac = self._head_path().read_text().partition(" ")
            last = rows[int(seq) - 1][1] if seq.isdigit() and 0 < int(seq) <= len(rows) else ""
            if not hmac.compare_digest(mac.strip(), self._mac(f"head:{seq}:{last}")):
                return Broken(int(seq) if seq.isdigit() else 0, "the head does not hold")
            head = int(seq)
        return check_chain(rows, lambda d, m: hmac.compare_digest(m, self._mac(d)), head)
