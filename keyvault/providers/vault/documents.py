"""The stage document and its metadata index: plain functions over plain data.

The document is what one KV v2 entry holds for a key (see the package docstring); the index
is the strings-only ``custom_metadata`` copy of its stage pointers, fingerprints and times,
stamped with the KV version it describes, so a listing needs metadata rights only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from keyvault.model import (
    Claim,
    KeyVersion,
    Stage,
    VersionInfo,
    VersionRecord,
)
from keyvault.secret import SecretValue

META_PREFIX = "keyvault_"
STAGES = (Stage.CURRENT, Stage.PREVIOUS, Stage.PENDING)


def entry_problem(stage: str, entry: Any) -> str | None:
    if not isinstance(entry, Mapping):
        return f"{stage} is not an entry"
    if not isinstance(entry.get("version"), str | int) or isinstance(entry.get("version"), bool):
        return f"{stage} has no version"
    if not isinstance(entry.get("value"), str) or not entry["value"]:
        return f"{stage} has no value"
    for field in ("created_at", "ref", "request_token"):
        if entry.get(field) is not None and not isinstance(entry[field], str):
            return f"{stage}.{field} is not text"
    try:
        parse_time(entry.get("created_at"))
    except ValueError:
        return f"{stage}.created_at is not a time"
    return None


def doc_problem(doc: Any) -> str | None:
    """What makes ``doc`` not a keyvault document, or None."""
    if not isinstance(doc, Mapping):
        return "not a JSON object"
    if not doc.get("current"):
        return "no current entry"
    for stage in STAGES:
        entry = doc.get(stage.value)
        if entry:
            problem = entry_problem(stage.value, entry)
            if problem is not None:
                return problem
    for field in ("environment", "promoted_at", "rolled_back_at"):
        if doc.get(field) is not None and not isinstance(doc[field], str):
            return f"{field} is not text"
    claim = doc.get("claim")
    if claim is not None:
        if not isinstance(claim, Mapping) or not all(
            isinstance(claim.get(f), str) for f in ("token", "owner", "at")
        ):
            return "claim is not a claim"
        try:
            parse_time(claim["at"])
        except ValueError:
            return "claim.at is not a time"
    for field in ("promoted_at", "rolled_back_at"):
        try:
            parse_time(doc.get(field))
        except ValueError:
            return f"{field} is not a time"
    return None


def claim_of(doc: Mapping[str, Any]) -> Claim | None:
    claim = doc.get("claim")
    if not isinstance(claim, Mapping) or not claim.get("token") or not claim.get("owner"):
        return None
    return Claim(str(claim["token"]), str(claim["owner"]), parse_time(claim.get("at")))


def version_of(entry: Mapping[str, Any] | None) -> str | None:
    return None if not entry else str(entry["version"])


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def transit_time(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        return parse_time(value)
    return None


def key_version(entry: Mapping[str, Any]) -> KeyVersion:
    return KeyVersion(
        str(entry["version"]),
        SecretValue(entry["value"]),
        parse_time(entry.get("created_at")),
        entry.get("ref"),
    )


def index_from_doc(doc: Mapping[str, Any], kv_version: int) -> dict[str, str]:
    """custom_metadata holds strings only: stage pointers, fingerprints and times."""
    meta = {META_PREFIX + "kv_version": str(kv_version)}
    for stage in STAGES:
        entry = doc.get(stage.value)
        if entry:
            meta[f"{META_PREFIX}{stage.value}_version"] = str(entry["version"])
            meta[f"{META_PREFIX}{stage.value}_fingerprint"] = SecretValue(
                entry["value"]
            ).fingerprint
            meta[f"{META_PREFIX}{stage.value}_created_at"] = entry.get("created_at") or ""
            if entry.get("ref"):
                meta[f"{META_PREFIX}{stage.value}_ref"] = str(entry["ref"])
    for field in ("environment", "promoted_at", "rolled_back_at"):
        if doc.get(field):
            meta[META_PREFIX + field] = str(doc[field])
    return meta


def stages_from_index(meta: Mapping[str, str]) -> dict[Stage, VersionInfo | None]:
    """What the metadata index says each stage holds (no current: the index is empty)."""

    def version_info(stage: Stage) -> VersionInfo | None:
        version = meta.get(f"{META_PREFIX}{stage.value}_version")
        if version is None:
            return None
        return VersionInfo(
            version,
            meta.get(f"{META_PREFIX}{stage.value}_fingerprint") or None,
            parse_time(meta.get(f"{META_PREFIX}{stage.value}_created_at")),
            meta.get(f"{META_PREFIX}{stage.value}_ref"),
        )

    return {stage: version_info(stage) for stage in STAGES}


def records_from_docs(docs: list[dict[str, Any]]) -> list[VersionRecord]:
    """A key's history from its stage documents, oldest first as KV keeps them."""
    found: dict[str, dict[str, Any]] = {}
    held: dict[str, Stage] = {}
    for doc in docs:
        now_held: dict[str, Stage] = {}
        for stage in STAGES:
            entry = doc.get(stage.value)
            if not entry:
                continue
            version = str(entry["version"])
            now_held[version] = stage
            record = found.setdefault(
                version,
                {
                    "version": version,
                    "fingerprint": SecretValue(entry["value"]).fingerprint,
                    "created_at": parse_time(entry.get("created_at")),
                    "created_by": entry.get("created_by"),
                    "ref": entry.get("ref"),
                },
            )
            if stage == Stage.CURRENT and held.get(version) != Stage.CURRENT:
                record["promoted_at"] = parse_time(doc.get("promoted_at"))
                record["promoted_by"] = doc.get("promoted_by")
        dropped = doc.get("dropped") or {}
        for version in set(held) - set(now_held):
            record = found[version]
            if dropped.get("version") == version:
                record["retired_at"] = parse_time(dropped.get("at"))
                record["retired_by"] = dropped.get("by")
                record["revoked"] = dropped.get("revoked")
        held = now_held
    records = [VersionRecord(stage=held.get(v), **record) for v, record in found.items()]
    return sorted(records, key=lambda r: int(r.version), reverse=True)
