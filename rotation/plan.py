"""What a rotation should do now: one pure function over a key's metadata and a time.

``Rotator.advance`` executes the plan and ``--dry-run`` prints it, so the two can never
disagree. No I/O here: the caller reads the key, the clocks and the issuer's kind first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

import msgspec

from keyvault.model import KeyInfo
from rotation.config import PolicyConfig
from rotation.status import key_status, needs_rotation, retire_at


class Step(enum.StrEnum):
    CREATE = "create"
    TEST = "test"
    PROMOTE = "promote"
    RETIRE = "retire"


class Result(enum.StrEnum):
    ROTATED = "rotated"  # promoted a new primary in this run
    RETIRED = "retired"  # only retired a previous key
    UNCHANGED = "unchanged"  # nothing was due
    WAITING = "waiting"  # in grace, or outside the rotation window
    NEEDS_STAGING = "needs-staging"  # manual key due, nothing staged
    CONFLICT = "conflict"  # another runner got there first; stood down
    FAILED = "failed"  # a step failed; nothing half-done
    READ_ONLY = "read-only"
    PLANNED = "planned"  # dry run


@dataclass(frozen=True, slots=True)
class Plan:
    """The steps to take now, in order, what the run reports when they all succeed, and
    why (for people)."""

    steps: tuple[Step, ...]
    result: Result
    detail: str


def retire_due(info: KeyInfo, policy: PolicyConfig, now: datetime, force: bool) -> bool:
    """The previous key may be revoked and dropped: its grace has passed, or a forced
    rotation must clear it first (a promotion never drops it unrevoked)."""
    if info.previous is None:
        return False
    until = retire_at(info, policy)
    return force or (until is not None and now >= until)


def plan(
    info: KeyInfo,
    policy: PolicyConfig,
    now: datetime,
    *,
    force: bool = False,
    window_open: bool = True,
    can_create: bool = True,
) -> Plan:
    steps: list[Step] = []
    if retire_due(info, policy, now, force):
        steps.append(Step.RETIRE)
        info = msgspec.structs.replace(info, previous=None)
    status = key_status(info, policy, now)
    idle = Result.RETIRED if steps else Result.UNCHANGED
    if info.previous is not None:
        if info.pending is None and not (force or needs_rotation(status)):
            return Plan(tuple(steps), idle, f"status {status}")
        return Plan(
            tuple(steps),
            Result.WAITING,
            f"previous key in grace until {retire_at(info, policy)}; it is retired (revoked) "
            "before anything is promoted (`--force` retires it now)",
        )
    if info.pending is None and not (force or needs_rotation(status)):
        return Plan(tuple(steps), idle, f"status {status}")
    if not (force or window_open):
        return Plan(tuple(steps), Result.WAITING, "outside the rotation window")
    if info.pending is None:
        if not can_create:
            return Plan(
                tuple(steps),
                Result.NEEDS_STAGING,
                f"status {status}; needs a staged key (`keyvault stage {info.name}`)",
            )
        steps.append(Step.CREATE)
    steps += [Step.TEST, Step.PROMOTE]
    return Plan(tuple(steps), Result.ROTATED, f"status {status}")
