"""What keyvault keeps in a secret's tags (stage fingerprints, times, issuer ids, intents)
and how a version's facts are read back from them: plain functions over plain data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from keyvault.model import (
    KeyInfo,
    VersionInfo,
)
from keyvault.secret import SecretValue

CURRENT, PREVIOUS, PENDING = "AWSCURRENT", "AWSPREVIOUS", "AWSPENDING"
MANAGED_TAG = "keyvault:managed"
TAG = "keyvault:"


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


STAGING_TAG = TAG + "staging"
CLAIM_LABEL = "KEYVAULTCLAIM"
PROMOTING_TAG = TAG + "promoting"
ROLLED_BACK_TAG = TAG + "rolled-back"


def promoted_at_of(tags: Mapping[str, str], current: str) -> datetime | None:
    """When ``current`` became current, from tags bound to that version: the tags a finished
    promote wrote, else the intent a crashed one wrote just before the label moved. Tags
    about another version are never taken for this one (None: the grace is unknown, and
    nothing is retired on a guess)."""
    if tags.get(TAG + "promoted-version") == current:
        return parse_time(tags.get(TAG + "promoted-at"))
    version, _, when = tags.get(PROMOTING_TAG, "").partition(" ")
    if version == current:
        return parse_time(when)
    if TAG + "promoted-version" not in tags and PROMOTING_TAG not in tags:
        return parse_time(tags.get(TAG + "promoted-at"))  # written before versions were bound
    return None


def rolled_back_at_of(tags: Mapping[str, str], current: str) -> datetime | None:
    """When ``current`` was restored by a rollback, if the tag is about that version (a
    later promotion of another version makes it stale, and so ignored)."""
    version, _, when = tags.get(ROLLED_BACK_TAG, "").partition(" ")
    return parse_time(when) if version == current else None


def tags_of(entry: Mapping[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in entry.get("Tags") or []}


def labels_of(stages: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Label → VersionId. AWSPENDING on the current version is a finished rotation, not a
    pending one (AWS leaves the label there after a promote)."""
    by_label: dict[str, str] = {}
    for version, labels in stages.items():
        for label in labels:
            by_label[label] = version
    if by_label.get(PENDING) is not None and by_label.get(PENDING) == by_label.get(CURRENT):
        del by_label[PENDING]
    return by_label


_STAGE_FIELDS = ("version", "fingerprint", "created-at")


def stage_tag_keys(stage: str) -> list[str]:
    return [f"{TAG}{stage}-{field}" for field in _STAGE_FIELDS]


def version_tags(stage: str, version: str, value: SecretValue, created: datetime) -> dict[str, str]:
    return {
        f"{TAG}{stage}-version": version,
        f"{TAG}{stage}-fingerprint": value.fingerprint,
        f"{TAG}{stage}-created-at": iso(created),
    }


def ref_tag(fingerprint: str) -> str:
    """Issuer refs are tagged by value fingerprint, not by stage: a runner that loses a
    stage race never overwrites the winner's, and a stage that crashed before its stage
    tags still finds its ref."""
    return f"{TAG}ref:{fingerprint}"


def ref_of(tags: Mapping[str, str], fingerprint: str | None) -> str | None:
    return None if fingerprint is None else tags.get(ref_tag(fingerprint))


def ref_tags(fingerprint: str | None) -> list[str]:
    """The ref tag to drop with a version (none when its fingerprint is unknown)."""
    return [] if fingerprint is None else [ref_tag(fingerprint)]


def info_tags(stage: str, info: VersionInfo | None) -> dict[str, str]:
    if info is None:
        return {}
    tags = {f"{TAG}{stage}-version": info.version}
    if info.fingerprint is not None:
        tags[f"{TAG}{stage}-fingerprint"] = info.fingerprint
    if info.created_at is not None:
        tags[f"{TAG}{stage}-created-at"] = iso(info.created_at)
    return tags


def tagged(tags: Mapping[str, str], version: str, field: str) -> str | None:
    """A tag value, only if some stage's tags describe exactly this version."""
    for stage in ("current", "previous", "pending"):
        if tags.get(f"{TAG}{stage}-version") == version:
            return tags.get(f"{TAG}{stage}-{field}")
    return None


def tagged_created_at(tags: Mapping[str, str], version: str) -> datetime | None:
    return parse_time(tagged(tags, version, "created-at"))


def tags_vouch_for(info: KeyInfo) -> bool:
    return all(
        v.created_at is not None and v.fingerprint is not None
        for v in (info.current, info.previous, info.pending)
        if v is not None
    )
