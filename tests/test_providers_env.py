"""The env backend: the read side of the contract, and clear refusals to write."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keyvault.errors import ConfigError, KeyNotFoundError, ReadOnlyError
from keyvault.providers.env import EnvProvider, variable_name
from keyvault.secret import SecretValue
from tests.leaks import assert_not_leaked, canary


def test_variable_names() -> None:
    assert variable_name("anthropic/prod") == "ANTHROPIC_PROD"
    assert variable_name("svc.a-b/c") == "SVC_A_B_C"
    assert variable_name("a/b", "KV_") == "KV_A_B"


def test_reads_primary_secondary_and_created_at() -> None:
    primary, secondary = canary(), canary()
    environ = {
        "ANTHROPIC_PROD": primary,
        "ANTHROPIC_PROD_SECONDARY": secondary,
        "ANTHROPIC_PROD_CREATED_AT": "2026-01-02T03:04:05Z",
    }
    provider = EnvProvider("ci", ["anthropic/prod"], environ=environ, environment="ci")
    keyset = provider.get_keyset("anthropic/prod")
    assert keyset.primary.secret.reveal() == primary
    assert keyset.secondary is not None and keyset.secondary.secret.reveal() == secondary
    assert keyset.primary.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert keyset.environment == "ci"
    (info,) = provider.list_keys()
    assert info.name == "anthropic/prod" and not info.writable
    assert info.current.fingerprint == SecretValue(primary).fingerprint
    assert info.previous is not None


def test_created_at_without_zone_is_utc_and_missing_is_unknown() -> None:
    provider = EnvProvider(
        "ci", ["a"], environ={"A": canary(), "A_CREATED_AT": "2026-01-02T03:04:05"}
    )
    assert provider.get_keyset("a").primary.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    provider = EnvProvider("ci", ["a"], environ={"A": canary()})
    assert provider.get_keyset("a").primary.created_at is None


def test_bad_created_at_names_the_variable() -> None:
    provider = EnvProvider("ci", ["a/b"], environ={"A_B": canary(), "A_B_CREATED_AT": "yesterday"})
    with pytest.raises(ConfigError, match="A_B_CREATED_AT"):
        provider.get_keyset("a/b")


def test_missing_variable_is_not_found_and_unlisted() -> None:
    provider = EnvProvider("ci", ["a/b"], environ={})
    with pytest.raises(KeyNotFoundError, match="A_B"):
        provider.get_keyset("a/b")
    assert provider.list_keys() == []


def test_prefix() -> None:
    raw = canary()
    provider = EnvProvider("ci", ["a"], prefix="KV_", environ={"KV_A": raw})
    assert provider.get_keyset("a").primary.secret.reveal() == raw


@pytest.mark.parametrize(
    "write",
    [
        lambda p: p.create("a", SecretValue("x" * 20)),
        lambda p: p.stage("a", SecretValue("x" * 20)),
        lambda p: p.promote("a", pending_version="2", expected_current="1"),
        lambda p: p.retire("a", expected_previous="1"),
        lambda p: p.discard_pending("a", pending_version="1"),
        lambda p: p.delete("a"),
    ],
)
def test_every_write_says_read_only(write) -> None:  # type: ignore[no-untyped-def]
    raw = canary()
    provider = EnvProvider("ci", ["a"], environ={"A": raw})
    with pytest.raises(ReadOnlyError, match="read-only") as excinfo:
        write(provider)
    assert_not_leaked(str(excinfo.value), raw, where="the error")
    assert provider.get_pending("a") is None
