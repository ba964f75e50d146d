"""The conformance suite: every writable backend passes the same tests."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import pytest

from keyvault.errors import ConflictError, KeyExistsError, KeyNotFoundError
from keyvault.model import KeyInfo
from keyvault.providers.base import KeyProvider
from keyvault.secret import SecretValue
from tests.leaks import canary

Names = Callable[[str], str]


def _secret() -> SecretValue:
    return SecretValue(canary())


def test_create_then_read(provider: KeyProvider, key_name: Names) -> None:
    name, value = key_name("create"), _secret()
    created_at = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
    info = provider.create(name, value, environment="prod", created_at=created_at)
    assert info.current.fingerprint == value.fingerprint
    keyset = provider.get_keyset(name)
    assert keyset.primary.secret == value
    assert keyset.secondary is None
    assert keyset.primary.created_at == created_at
    assert keyset.environment == "prod"
    described = provider.describe(name)
    assert described.environment == "prod"
    assert described.current.created_at == created_at
    assert described.previous is None and described.pending is None
    assert described.promoted_at is None


def test_create_existing_is_refused(provider: KeyProvider, key_name: Names) -> None:
    name, first = key_name("dup"), _secret()
    provider.create(name, first)
    with pytest.raises(KeyExistsError, match="rotate"):
        provider.create(name, _secret())
    assert provider.get_keyset(name).primary.secret == first


def test_missing_key(provider: KeyProvider, key_name: Names) -> None:
    name = key_name("missing")
    with pytest.raises(KeyNotFoundError):
        provider.get_keyset(name)
    with pytest.raises(KeyNotFoundError):
        provider.describe(name)
    with pytest.raises(KeyNotFoundError):
        provider.stage(name, _secret())


def _has_no_secret(value: object) -> bool:
    if isinstance(value, SecretValue):
        return False
    if isinstance(value, msgspec.Struct):  # the model's values (KeyInfo, VersionInfo...)
        return all(_has_no_secret(getattr(value, f)) for f in value.__struct_fields__)
    assert not dataclasses.is_dataclass(value), f"a {type(value).__name__} was not looked into"
    return True


def test_list_has_metadata_only(provider: KeyProvider, key_name: Names) -> None:
    names = sorted(key_name("list") for _ in range(3))
    values = {name: _secret() for name in names}
    for name in names:
        provider.create(name, values[name], environment="dev")
    listed = {info.name: info for info in provider.list_keys() if info.name in values}
    assert sorted(listed) == names
    for name, info in listed.items():
        assert isinstance(info, KeyInfo)
        assert _has_no_secret(info)
        assert info.provider == provider.name
        assert info.environment == "dev"
        assert info.current.fingerprint == values[name].fingerprint
        assert info.current.created_at is not None


def test_stage_promote_retire(provider: KeyProvider, key_name: Names) -> None:
    name, old, new = key_name("rotate"), _secret(), _secret()
    v1 = provider.create(name, old).current.version

    staged = provider.stage(name, new, request_token="tok-1")
    assert staged.pending is not None
    assert staged.pending.fingerprint == new.fingerprint
    assert provider.get_keyset(name).primary.secret == old, "pending is never served"
    pending = provider.get_pending(name)
    assert pending is not None and pending.secret == new

    promoted = provider.promote(name, pending_version=staged.pending.version, expected_current=v1)
    assert promoted.current.version == staged.pending.version
    assert promoted.previous is not None and promoted.previous.version == v1
    assert promoted.pending is None
    assert promoted.promoted_at is not None
    keyset = provider.get_keyset(name)
    assert keyset.primary.secret == new
    assert keyset.secondary is not None and keyset.secondary.secret == old

    retired = provider.retire(name, expected_previous=v1)
    assert retired.previous is None
    assert provider.get_keyset(name).secondary is None
    again = provider.retire(name, expected_previous=v1)
    assert again.previous is None, "retire is idempotent"


def test_stage_is_idempotent_per_token(provider: KeyProvider, key_name: Names) -> None:
    name, value = key_name("token"), _secret()
    provider.create(name, _secret())
    first = provider.stage(name, value, request_token="rotation-42")
    second = provider.stage(name, value, request_token="rotation-42")
    assert first.pending is not None and second.pending is not None
    assert first.pending.version == second.pending.version
    with pytest.raises(ConflictError):
        provider.stage(name, _secret(), request_token="rotation-43")


def test_promote_is_compare_and_set(provider: KeyProvider, key_name: Names) -> None:
    name, old = key_name("cas"), _secret()
    v1 = provider.create(name, old).current.version
    staged = provider.stage(name, _secret())
    assert staged.pending is not None
    with pytest.raises(ConflictError):
        provider.promote(name, pending_version=staged.pending.version, expected_current="999999")
    with pytest.raises(ConflictError):
        provider.promote(name, pending_version="999999", expected_current=v1)
    unchanged = provider.describe(name)
    assert unchanged.current.version == v1
    assert unchanged.pending is not None and unchanged.pending.version == staged.pending.version
    assert provider.get_keyset(name).primary.secret == old


def test_promotion_never_drops_a_previous_that_was_not_retired(
    provider: KeyProvider, key_name: Names
) -> None:
    """The previous key may be live at its issuer: only retire (after a revoke) drops it."""
    name, values = key_name("twice"), [_secret() for _ in range(3)]
    v1 = provider.create(name, values[0]).current.version
    first = provider.stage(name, values[1])
    assert first.pending is not None
    v2 = provider.promote(name, pending_version=first.pending.version, expected_current=v1)
    second = provider.stage(name, values[2])
    assert second.pending is not None
    with pytest.raises(ConflictError, match="previous version"):
        provider.promote(
            name, pending_version=second.pending.version, expected_current=v2.current.version
        )
    keyset = provider.get_keyset(name)
    assert keyset.primary.secret == values[1]
    assert keyset.secondary is not None and keyset.secondary.secret == values[0]

    provider.retire(name, expected_previous=v1)
    provider.promote(
        name, pending_version=second.pending.version, expected_current=v2.current.version
    )
    keyset = provider.get_keyset(name)
    assert keyset.primary.secret == values[2]
    assert keyset.secondary is not None and keyset.secondary.secret == values[1]


def test_stage_replace_swaps_the_pending_version_in_one_write(
    provider: KeyProvider, key_name: Names
) -> None:
    name, values = key_name("replace"), [_secret() for _ in range(3)]
    provider.create(name, values[0])
    first = provider.stage(name, values[1])
    assert first.pending is not None
    with pytest.raises(ConflictError):
        provider.stage(name, values[2])
    with pytest.raises(ConflictError):
        provider.stage(name, values[2], replace="999999")
    still = provider.get_pending(name)
    assert still is not None and still.secret == values[1]
    swapped = provider.stage(name, values[2], replace=first.pending.version)
    assert swapped.pending is not None
    assert swapped.pending.fingerprint == values[2].fingerprint
    pending = provider.get_pending(name)
    assert pending is not None and pending.secret == values[2]


def test_retire_checks_the_version(provider: KeyProvider, key_name: Names) -> None:
    name = key_name("retire")
    v1 = provider.create(name, _secret()).current.version
    staged = provider.stage(name, _secret())
    assert staged.pending is not None
    provider.promote(name, pending_version=staged.pending.version, expected_current=v1)
    with pytest.raises(ConflictError):
        provider.retire(name, expected_previous=staged.pending.version)
    assert provider.describe(name).previous is not None


def test_discard_pending(provider: KeyProvider, key_name: Names) -> None:
    name, current = key_name("discard"), _secret()
    provider.create(name, current)
    staged = provider.stage(name, _secret())
    assert staged.pending is not None
    after = provider.discard_pending(name, pending_version=staged.pending.version)
    assert after.pending is None
    assert provider.get_pending(name) is None
    restaged = provider.stage(name, _secret())
    assert restaged.pending is not None
    assert provider.get_keyset(name).primary.secret == current


def test_delete(provider: KeyProvider, key_name: Names) -> None:
    name = key_name("delete")
    provider.create(name, _secret())
    provider.delete(name)
    with pytest.raises(KeyNotFoundError):
        provider.get_keyset(name)
    assert name not in {info.name for info in provider.list_keys()}


def test_concurrent_promotes_one_wins(provider: KeyProvider, key_name: Names) -> None:
    name = key_name("race")
    v1 = provider.create(name, _secret()).current.version
    staged = provider.stage(name, _secret())
    assert staged.pending is not None
    pending_version = staged.pending.version
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def promote() -> None:
        barrier.wait()
        try:
            provider.promote(name, pending_version=pending_version, expected_current=v1)
            outcomes.append("won")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=promote) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "won"]
    final = provider.describe(name)
    assert final.current.version == pending_version
    assert final.previous is not None and final.previous.version == v1


def test_issuer_refs_follow_their_versions(provider: KeyProvider, key_name: Names) -> None:
    name = key_name("ref")
    v1 = provider.create(name, _secret(), ref="id-1").current
    assert v1.ref == "id-1"
    staged = provider.stage(name, _secret(), ref="id-2")
    assert staged.pending is not None and staged.pending.ref == "id-2"
    pending = provider.get_pending(name)
    assert pending is not None and pending.ref == "id-2"
    promoted = provider.promote(
        name, pending_version=staged.pending.version, expected_current=v1.version
    )
    assert promoted.current.ref == "id-2"
    assert promoted.previous is not None and promoted.previous.ref == "id-1"
    keyset = provider.get_keyset(name)
    assert keyset.primary.ref == "id-2"
    assert keyset.secondary is not None and keyset.secondary.ref == "id-1"
    listed = {info.name: info for info in provider.list_keys()}[name]
    assert listed.current.ref == "id-2" and listed.previous is not None
    assert listed.previous.ref == "id-1"
    # a version without a ref does not inherit one from the tags or rows it replaces
    again = provider.stage(name, _secret())
    assert again.pending is not None and again.pending.ref is None
    provider.retire(name, expected_previous=v1.version)
    final = provider.promote(
        name, pending_version=again.pending.version, expected_current=promoted.current.version
    )
    assert final.current.ref is None
    assert final.previous is not None and final.previous.ref == "id-2"
    assert {i.name: i for i in provider.list_keys()}[name].current.ref is None


def test_rollback_swaps_current_and_previous_with_compare_and_set(
    provider: KeyProvider, key_name: Names
) -> None:
    name, old, new = key_name("rollback"), _secret(), _secret()
    v1 = provider.create(name, old).current.version
    staged = provider.stage(name, new)
    assert staged.pending is not None
    promoted = provider.promote(name, pending_version=staged.pending.version, expected_current=v1)
    v2 = promoted.current.version
    with pytest.raises(ConflictError):
        provider.rollback(name, expected_current=v1, expected_previous=v2)  # stale read
    rolled = provider.rollback(name, expected_current=v2, expected_previous=v1)
    assert (rolled.current.version, rolled.previous and rolled.previous.version) == (v1, v2)
    assert rolled.rolled_back_at is not None
    assert promoted.promoted_at is not None and rolled.promoted_at is not None
    assert rolled.promoted_at >= promoted.promoted_at  # the demoted key's grace starts now
    keyset = provider.get_keyset(name)
    assert keyset.primary.secret == old and keyset.secondary is not None
    assert keyset.secondary.secret == new
    listed = {i.name: i for i in provider.list_keys()}[name]
    assert isinstance(listed, KeyInfo) and listed.current.version == v1
    # a second rollback with the first one's read loses the compare-and-set
    with pytest.raises(ConflictError):
        provider.rollback(name, expected_current=v2, expected_previous=v1)
    provider.retire(name, expected_previous=v2)
    with pytest.raises(ConflictError, match="no previous"):
        provider.rollback(name, expected_current=v1, expected_previous=v2)


def test_history_tells_every_version_newest_first(provider: KeyProvider, key_name: Names) -> None:
    """Three rotations and a rollback: each version with its stage, times and actors, as
    far as the backend's own records go."""
    name = key_name("history")
    values = [_secret() for _ in range(4)]
    current = provider.create(name, values[0]).current.version
    for value in values[1:]:
        info = provider.describe(name)
        if info.previous is not None:
            provider.retire(name, expected_previous=info.previous.version)
        staged = provider.stage(name, value)
        assert staged.pending is not None
        current = provider.promote(
            name, pending_version=staged.pending.version, expected_current=current
        ).current.version
    info = provider.describe(name)
    assert info.previous is not None
    provider.rollback(name, expected_current=current, expected_previous=info.previous.version)
    history = provider.history(name)
    newest_first = [v.fingerprint for v in reversed(values)]
    if provider.name == "aws":  # creation times to the second: same-second versions tie
        assert sorted(r.fingerprint or "" for r in history) == sorted(newest_first)
    else:
        assert [r.fingerprint for r in history] == newest_first
    stages = {r.fingerprint: r.stage for r in history}
    assert stages[values[2].fingerprint] == "current"  # rolled back to
    assert stages[values[3].fingerprint] == "previous"
    assert stages[values[0].fingerprint] is None and stages[values[1].fingerprint] is None
    assert all(r.created_at is not None for r in history)
    restored = next(r for r in history if r.fingerprint == values[2].fingerprint)
    assert restored.promoted_at is not None
    if provider.name != "aws":  # AWS does not record label moves (CloudTrail does)
        first = next(r for r in history if r.fingerprint == values[0].fingerprint)
        assert first.retired_at is not None and first.revoked is True
        assert first.created_by and "@" in first.created_by and first.retired_by
        assert restored.promoted_by


def test_two_concurrent_rollbacks_make_one(provider: KeyProvider, key_name: Names) -> None:
    import threading

    name = key_name("rollback-race")
    v1 = provider.create(name, _secret()).current.version
    staged = provider.stage(name, _secret())
    assert staged.pending is not None
    v2 = provider.promote(
        name, pending_version=staged.pending.version, expected_current=v1
    ).current.version
    barrier = threading.Barrier(2)
    results: list[str] = []

    def roll() -> None:
        barrier.wait()
        try:
            provider.rollback(name, expected_current=v2, expected_previous=v1)
            results.append("won")
        except ConflictError:
            results.append("lost")

    threads = [threading.Thread(target=roll) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["lost", "won"]
    info = provider.describe(name)
    assert info.current.version == v1 and info.previous is not None
    assert info.previous.version == v2
