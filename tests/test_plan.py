"""The rotation plan: a pure function, tested as a table (no backend, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyvault.model import KeyInfo, VersionInfo
from keyvault.schema import Duration
from rotation.config import PolicyConfig
from rotation.plan import Result, Step, plan

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY = PolicyConfig(max_age=Duration(days=90), warn_age=Duration(days=80), grace=Duration(days=7))


def key(
    age_days: float,
    *,
    previous: bool = False,
    promoted_days_ago: float | None = None,
    pending: bool = False,
) -> KeyInfo:
    def version(number: str, days: float) -> VersionInfo:
        return VersionInfo(number, f"fp:{number:0>16}", NOW - timedelta(days=days))

    return KeyInfo(
        name="svc/key",
        provider="local",
        current=version("2", age_days),
        previous=version("1", 200) if previous else None,
        pending=version("3", 0) if pending else None,
        promoted_at=None if promoted_days_ago is None else NOW - timedelta(promoted_days_ago),
    )


CASES = [
    # (key, options, steps, result)
    (key(10), {}, (), Result.UNCHANGED),
    (key(85), {}, (Step.CREATE, Step.TEST, Step.PROMOTE), Result.ROTATED),
    (key(85), {"window_open": False}, (), Result.WAITING),
    (
        key(85),
        {"window_open": False, "force": True},
        (Step.CREATE, Step.TEST, Step.PROMOTE),
        Result.ROTATED,
    ),
    (key(85), {"can_create": False}, (), Result.NEEDS_STAGING),
    (key(10, pending=True), {}, (Step.TEST, Step.PROMOTE), Result.ROTATED),
    (key(1, previous=True, promoted_days_ago=1), {}, (), Result.UNCHANGED),
    (key(8, previous=True, promoted_days_ago=8), {}, (Step.RETIRE,), Result.RETIRED),
    # a staged key waits while the previous one is in grace; force revokes it first
    (key(1, previous=True, promoted_days_ago=1, pending=True), {}, (), Result.WAITING),
    (
        key(1, previous=True, promoted_days_ago=1, pending=True),
        {"force": True},
        (Step.RETIRE, Step.TEST, Step.PROMOTE),
        Result.ROTATED,
    ),
    (
        key(95, previous=True, promoted_days_ago=8),
        {},
        (Step.RETIRE, Step.CREATE, Step.TEST, Step.PROMOTE),
        Result.ROTATED,
    ),
    # a previous whose promotion time is unknown is never retired on a guess
    (key(95, previous=True), {}, (), Result.WAITING),
]


@pytest.mark.parametrize(("info", "options", "steps", "result"), CASES)
def test_plan(info: KeyInfo, options: dict[str, bool], steps: tuple[Step], result: Result) -> None:
    chosen = plan(info, POLICY, NOW, **options)
    assert (chosen.steps, chosen.result) == (steps, result), chosen.detail


def test_a_manual_key_still_retires_its_expired_previous() -> None:
    info = key(95, previous=True, promoted_days_ago=8)
    chosen = plan(info, POLICY, NOW, can_create=False)
    assert chosen.steps == (Step.RETIRE,) and chosen.result == Result.NEEDS_STAGING
