"""The rotation state machine on real stores: steps, crashes, races, windows, issuers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from keyvault.providers.base import KeyProvider
from keyvault.providers.file import FileProvider
from keyvault.secret import SecretValue
from rotation.engine import Result, Rotator, Step
from tests.leaks import canary
from tests.rotation_helpers import (
    Faulty,
    RecordingIssuer,
    days_ago,
    make_kv,
    make_rotator,
    now_clock,
)

Names = Callable[[str], str]


@pytest.fixture
def issuer() -> RecordingIssuer:
    return RecordingIssuer()


def test_due_key_rotates_then_retires_after_grace(
    provider: KeyProvider, key_name: Names, issuer: RecordingIssuer
) -> None:
    clock = now_clock()
    name, old = key_name("due"), SecretValue(canary())
    provider.create(name, old, created_at=days_ago(clock, 85))
    rotator = make_rotator(make_kv(provider), issuer, clock)

    outcome = rotator.advance(name)
    assert outcome.result == Result.ROTATED, outcome.detail
    assert outcome.steps == (Step.CREATE, Step.TEST, Step.PROMOTE)
    keyset = provider.get_keyset(name)
    assert keyset.primary.secret == issuer.created[0]
    assert keyset.secondary is not None and keyset.secondary.secret == old, "old key valid in grace"

    clock.advance(timedelta(days=3))
    assert rotator.advance(name).result == Result.UNCHANGED
    assert provider.get_keyset(name).secondary is not None

    clock.advance(timedelta(days=5))
    retired = rotator.advance(name)
    assert retired.result == Result.RETIRED and retired.steps == (Step.RETIRE,)
    assert provider.get_keyset(name).secondary is None
    assert issuer.revoked == [old.fingerprint]


def test_fresh_key_is_left_alone_unless_forced(
    provider: KeyProvider, key_name: Names, issuer: RecordingIssuer
) -> None:
    clock = now_clock()
    name, value = key_name("fresh"), SecretValue(canary())
    provider.create(name, value, created_at=days_ago(clock, 10))
    rotator = make_rotator(make_kv(provider), issuer, clock)
    assert rotator.advance(name).result == Result.UNCHANGED
    assert provider.get_keyset(name).primary.secret == value
    assert rotator.advance(name, force=True).result == Result.ROTATED
    assert provider.get_keyset(name).primary.secret == issuer.created[0]


CRASHES = [
    ("create", "stage", True),  # the stage landed, the process died before testing
    ("test", "promote", False),  # the test passed, the process died before promoting
    ("promote", "promote", True),  # the promotion landed, the caller never heard
    ("retire", "retire", False),  # revoked at the issuer, died before dropping the stage
    ("retired", "retire", True),  # the stage was dropped, the caller never heard
]


@pytest.mark.parametrize(("after_step", "method", "after"), CRASHES, ids=[c[0] for c in CRASHES])
def test_crash_after_each_step_is_finished_by_the_next_run(
    provider: KeyProvider,
    key_name: Names,
    issuer: RecordingIssuer,
    after_step: str,
    method: str,
    after: bool,
) -> None:
    clock = now_clock()
    name, old = key_name("crash"), SecretValue(canary())
    provider.create(name, old, created_at=days_ago(clock, 85))
    faulty = Faulty(provider, method, after=after)
    retiring = after_step.startswith("retire")
    if retiring:  # rotate cleanly first, then crash while retiring
        make_rotator(make_kv(provider), issuer, clock).advance(name)
        clock.advance(timedelta(days=8))

    first = make_rotator(make_kv(faulty), issuer, clock).advance(name)
    assert faulty.fired
    assert first.result == Result.FAILED

    second = make_rotator(make_kv(provider), issuer, clock).advance(name)
    assert second.ok, second.detail
    keyset = provider.get_keyset(name)
    assert len(issuer.created) == 1, "rotated exactly once"
    assert keyset.primary.secret == issuer.created[0]
    if retiring:
        assert keyset.secondary is None
        assert set(issuer.revoked) == {old.fingerprint}
    else:
        assert keyset.secondary is not None and keyset.secondary.secret == old
        clock.advance(timedelta(days=8))
        assert make_rotator(make_kv(provider), issuer, clock).advance(name).result == Result.RETIRED
        assert provider.get_keyset(name).secondary is None
        assert issuer.revoked == [old.fingerprint]
    assert provider.describe(name).pending is None


def test_two_runners_on_one_key_make_one_rotation(
    provider: KeyProvider, key_name: Names, issuer: RecordingIssuer
) -> None:
    clock = now_clock()
    name, old = key_name("race"), SecretValue(canary())
    provider.create(name, old, created_at=days_ago(clock, 85))
    kv = make_kv(provider)
    barrier = threading.Barrier(2)
    results: list[Result] = []

    def run() -> None:
        rotator = make_rotator(kv, issuer, clock)
        barrier.wait()
        results.append(rotator.advance(name).result)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Result.ROTATED in results and Result.FAILED not in results
    keyset = provider.get_keyset(name)
    assert keyset.secondary is not None and keyset.secondary.secret == old
    winners = [v for v in issuer.created if v == keyset.primary.secret]
    assert len(winners) == 1
    # a loser's unused key was revoked at the issuer, never left valid
    losers = {v.fingerprint for v in issuer.created} - {keyset.primary.fingerprint}
    assert losers <= set(issuer.revoked)


def test_issuer_down_changes_nothing(
    provider: KeyProvider, key_name: Names, issuer: RecordingIssuer
) -> None:
    clock = now_clock()
    name = key_name("down")
    provider.create(name, SecretValue(canary()), created_at=days_ago(clock, 85))
    before = provider.describe(name)
    issuer.down = True
    outcome = make_rotator(make_kv(provider), issuer, clock).advance(name)
    assert outcome.result == Result.FAILED and outcome.failed_step == Step.CREATE
    assert "unreachable" in outcome.detail
    assert provider.describe(name) == before


def test_failing_test_leaves_current_untouched(
    provider: KeyProvider, key_name: Names, issuer: RecordingIssuer
) -> None:
    clock = now_clock()
    name, old = key_name("badtest"), SecretValue(canary())
    provider.create(name, old, created_at=days_ago(clock, 85))
    issuer.fail_verify = True
    rotator = make_rotator(make_kv(provider), issuer, clock)
    outcome = rotator.advance(name)
    assert outcome.result == Result.FAILED and outcome.failed_step == Step.TEST
    assert provider.get_keyset(name).primary.secret == old
    assert provider.describe(name).pending is not None
    issuer.fail_verify = False  # the upstream recovers: the same pending key goes through
    assert rotator.advance(name).result == Result.ROTATED
    assert len(issuer.created) == 1


def test_window_closed_waits_unless_forced(
    file_provider: FileProvider, issuer: RecordingIssuer
) -> None:
    clock = now_clock()
    closed_day = (clock.now.weekday() + 1) % 7
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[closed_day]
    kv = make_kv(
        file_provider,
        policies={"default": {"max_age": "90d", "grace": "7d", "window": {"days": days}}},
    )
    file_provider.create("w", SecretValue(canary()), created_at=days_ago(clock, 95))
    rotator = make_rotator(kv, issuer, clock)
    outcome = rotator.advance("w")
    assert outcome.result == Result.WAITING and "window" in outcome.detail
    assert issuer.created == []
    assert rotator.advance("w", force=True).result == Result.ROTATED
    clock.advance(timedelta(days=1))  # now inside the window
    file_provider.create("w2", SecretValue(canary()), created_at=days_ago(clock, 95))
    assert rotator.advance("w2").result == Result.ROTATED


def test_dry_run_changes_nothing(file_provider: FileProvider, issuer: RecordingIssuer) -> None:
    clock = now_clock()
    file_provider.create("d", SecretValue(canary()), created_at=days_ago(clock, 85))
    before = file_provider.describe("d")
    outcome = make_rotator(make_kv(file_provider), issuer, clock).advance("d", dry_run=True)
    assert outcome.result == Result.PLANNED
    assert outcome.steps == (Step.CREATE, Step.TEST, Step.PROMOTE)
    assert file_provider.describe("d") == before and issuer.created == []


def test_forced_rotation_retires_a_previous_still_in_grace(
    file_provider: FileProvider, issuer: RecordingIssuer
) -> None:
    clock = now_clock()
    first = SecretValue(canary())
    file_provider.create("f", first, created_at=days_ago(clock, 85))
    rotator = make_rotator(make_kv(file_provider), issuer, clock)
    assert rotator.advance("f").result == Result.ROTATED
    assert rotator.advance("f").result == Result.UNCHANGED  # fresh, previous in grace
    forced = rotator.advance("f", force=True)
    assert forced.result == Result.ROTATED and forced.steps[0] == Step.RETIRE
    assert issuer.revoked == [first.fingerprint], "nothing is dropped unrevoked"


def test_read_only_provider_is_reported(
    issuer: RecordingIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyvault.registry import KeyVault
    from rotation.config import parse_config

    monkeypatch.setenv("CI_TOKEN", canary())
    kv = KeyVault(parse_config({"providers": {"ci": {"type": "env", "keys": ["ci/token"]}}}))
    outcome = Rotator(kv).advance("ci/token", force=True)
    assert outcome.result == Result.READ_ONLY and "read-only" in outcome.detail


def test_rotation_outcome_never_holds_a_secret(
    file_provider: FileProvider, issuer: RecordingIssuer
) -> None:
    from tests.leaks import assert_not_leaked

    clock = now_clock()
    old = canary()
    file_provider.create("s", SecretValue(old), created_at=days_ago(clock, 85))
    issuer.fail_verify = True
    outcome = make_rotator(make_kv(file_provider), issuer, clock).advance("s")
    pending = file_provider.get_pending("s")
    assert pending is not None
    texts: list[Any] = [outcome.detail, repr(outcome), str(outcome.error)]
    for text in texts:
        assert_not_leaked(str(text), old, pending.secret.reveal(), where="a rotation outcome")


def test_sweep_rotates_an_overdue_transit_key(
    openbao: Any, vault_root: Any, vault_prefix: str
) -> None:
    import hvac

    from keyvault.providers.vault import VaultProvider
    from rotation.sweep import sweep

    if "transit/" not in vault_root.sys.list_mounted_secrets_engines()["data"]:
        vault_root.sys.enable_secrets_engine("transit")
    key = f"tk-{vault_prefix[:-1]}"
    vault_root.secrets.transit.create_key(key)
    provider = VaultProvider(
        "bao",
        hvac.Client(url=openbao.url),
        prefix=vault_prefix,
        transit_keys=(key,),
        environ={"VAULT_TOKEN": openbao.root_token},
    )
    clock = now_clock()
    rotator = make_rotator(make_kv(provider), RecordingIssuer(), clock)
    first = sweep(rotator.kv, rotator)
    assert first.server_rotations == []
    clock.advance(timedelta(days=100))  # the key's only version is now past max age
    report = sweep(rotator.kv, rotator)
    assert report.server_rotations == [key]
    assert provider.list_server_keys()[0].latest_version == "2"
    rows = [r for r in report.rows if r.kind == "vault-transit"]
    assert rows and rows[0].fingerprint == "v2"


def test_a_due_manual_key_still_retires_its_expired_previous(file_provider: FileProvider) -> None:
    clock = now_clock()
    kv = make_kv(file_provider, keys={"hand/key": {"issuer": "manual"}})
    file_provider.create("hand/key", SecretValue(canary()), created_at=days_ago(clock, 200))
    file_provider.stage("hand/key", SecretValue(canary()))
    rotator = Rotator(kv, clock=clock, backend_clock=lambda _: clock())
    assert rotator.advance("hand/key").result == Result.ROTATED
    clock.advance(timedelta(days=95))  # past grace, and the new key is overdue too
    outcome = rotator.advance("hand/key")
    assert outcome.result == Result.NEEDS_STAGING and outcome.steps == (Step.RETIRE,)
    assert file_provider.describe("hand/key").previous is None


def test_a_concurrent_sweep_counts_each_finished_key_once(
    file_provider: FileProvider, issuer: RecordingIssuer
) -> None:
    from rotation.sweep import sweep

    clock = now_clock()
    for index in range(12):
        file_provider.create(f"due/k{index:02d}", SecretValue(canary()),
                             created_at=days_ago(clock, 95))  # fmt: skip
    kv = make_kv(file_provider)
    seen: list[tuple[int, int]] = []
    report = sweep(kv, make_rotator(kv, issuer, clock), concurrency=4,
                   progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert report.count(Result.ROTATED) == 12
    assert seen == [(done, 12) for done in range(1, 13)]
