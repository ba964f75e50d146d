"""A key's status under its policy: plain functions over metadata and a given time."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from keyvault.model import KeyInfo, ServerKeyInfo
from rotation.config import PolicyConfig


class Status(enum.StrEnum):
    OK = "ok"
    DUE = "due"  # past warn age: the scheduler rotates it
    OVERDUE = "overdue"  # past max age
    ROTATING = "rotating"  # a pending version, or a secondary not yet retired
    READ_ONLY = "read-only"  # env keys: age reported, never rotated here
    ERROR = "error"  # the provider could not be read


#: worst first, for sorting and for --fail-on thresholds
SEVERITY = {
    Status.ERROR: 5,
    Status.OVERDUE: 4,
    Status.DUE: 3,
    Status.ROTATING: 2,
    Status.READ_ONLY: 1,
    Status.OK: 0,
}


def age(created_at: datetime | None, now: datetime) -> timedelta | None:
    return None if created_at is None else now - created_at


def retire_at(info: KeyInfo, policy: PolicyConfig) -> datetime | None:
    """When the secondary stops being valid: grace after the promotion that made it so."""
    if info.previous is None or info.promoted_at is None:
        return None
    return info.promoted_at + policy.grace


def schedule_age(info: KeyInfo, now: datetime) -> timedelta | None:
    """The current version's age for the rotation schedule: from its creation, or from the
    rollback that restored it (so the next sweep does not rotate it straight away)."""
    started = info.current.created_at
    if info.rolled_back_at is not None and (started is None or info.rolled_back_at > started):
        started = info.rolled_back_at
    return age(started, now)


def key_status(info: KeyInfo, policy: PolicyConfig, now: datetime) -> Status:
    current_age = schedule_age(info, now)
    if current_age is not None and current_age >= policy.max_age:
        return Status.OVERDUE
    if not info.writable:
        return Status.READ_ONLY
    if info.pending is not None:
        return Status.ROTATING
    if info.previous is not None:
        # in grace, or past it and waiting to be retired: either way the rotation is not
        # finished, and the sweep must come back to revoke and retire the previous key
        return Status.ROTATING
    if current_age is not None and current_age >= policy.effective_warn_age:
        return Status.DUE
    return Status.OK


def server_key_status(info: ServerKeyInfo, policy: PolicyConfig, now: datetime) -> Status:
    """Server-rotated keys: due or overdue by the age of their newest version."""
    current_age = age(info.created_at, now)
    if current_age is None:
        return Status.OK
    if current_age >= policy.max_age:
        return Status.OVERDUE
    if current_age >= policy.effective_warn_age:
        return Status.DUE
    return Status.OK


def needs_rotation(status: Status) -> bool:
    return status in (Status.DUE, Status.OVERDUE)
