"""Issuers against a loopback vendor API: http, anthropic, probes, and an entry-point plugin."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keyvault.crypto import Keyring, MasterKey
from keyvault.errors import ConfigError
from keyvault.providers.file import FileProvider
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue, fingerprint
from rotation.config import parse_config
from rotation.engine import Result, Rotator, Step
from rotation.issuers import build_issuer
from rotation.issuers.anthropic import matches_hint
from tests.conftest import Clock
from tests.leaks import canary
from tests.vendor_api import VendorAPI


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FileProvider]:
    clock = Clock(datetime.now(UTC))
    provider = FileProvider(
        "local", tmp_path / "s.db", Keyring([MasterKey.generate()]), clock=clock, create=True
    )
    yield provider
    provider.close()


def kv_with(store: FileProvider, **config: Any) -> KeyVault:
    data = {"providers": {"local": {"type": "file"}}, **config}
    return KeyVault(parse_config(data), providers={"local": store})


def rotator(kv: KeyVault, store: FileProvider) -> Rotator:
    return Rotator(kv, clock=store._clock)


def test_http_issuer_creates_verifies_and_revokes(store: FileProvider, vendor: VendorAPI) -> None:
    admin = canary("admin")
    vendor.state.admin_keys.add(admin)
    store.create("vendor/admin", SecretValue(admin))
    first = canary("first")
    first_id = vendor.state.add_key(first)
    store.create(
        "svc/key",
        SecretValue(first),
        ref=first_id,
        created_at=datetime.now(UTC) - timedelta(days=85),
    )
    kv = kv_with(
        store,
        issuers={
            "vendor": {
                "type": "http",
                "create": {
                    "url": f"{vendor.url}/admin/keys",
                    "method": "POST",
                    "json": {"name": "{name}"},
                },
                "verify": {"url": f"{vendor.url}/v1/models"},
                "revoke": {"url": f"{vendor.url}/admin/keys/{{id}}", "method": "DELETE"},
                "key_path": "data.secret",
                "id_path": "data.id",
                "admin_key": "vendor/admin",
                "key_header": "x-api-key",
            }
        },
        keys={"svc/key": {"issuer": "vendor"}},
    )
    engine = rotator(kv, store)
    outcome = engine.advance("svc/key")
    assert outcome.result == Result.ROTATED, outcome.detail
    keyset = store.get_keyset("svc/key")
    assert vendor.state.is_valid(keyset.primary.secret.reveal())
    assert keyset.primary.ref is not None and keyset.primary.ref != first_id
    store._clock.advance(timedelta(days=8))  # type: ignore[attr-defined]
    assert engine.advance("svc/key").result == Result.RETIRED
    assert vendor.state.status_of(first) == "inactive"
    assert vendor.state.is_valid(keyset.primary.secret.reveal())


def test_http_issuer_bad_admin_key_is_an_issuer_error(
    store: FileProvider, vendor: VendorAPI
) -> None:
    store.create("vendor/admin", SecretValue(canary()))  # not an admin key at the vendor
    store.create(
        "svc/key", SecretValue(canary()), created_at=datetime.now(UTC) - timedelta(days=85)
    )
    kv = kv_with(
        store,
        issuers={
            "vendor": {
                "type": "http",
                "create": {"url": f"{vendor.url}/admin/keys", "method": "POST"},
                "admin_key": "vendor/admin",
            }
        },
        keys={"svc/key": {"issuer": "vendor"}},
    )
    outcome = rotator(kv, store).advance("svc/key")
    assert outcome.result == Result.FAILED and outcome.failed_step == Step.CREATE
    assert "answered 401" in outcome.detail
    assert store.describe("svc/key").pending is None


def test_probe_failure_keeps_current(store: FileProvider, vendor: VendorAPI) -> None:
    old = canary()
    vendor.state.add_key(old)
    store.create("svc/key", SecretValue(old), created_at=datetime.now(UTC) - timedelta(days=85))
    kv = kv_with(
        store,
        keys={"svc/key": {"probe": {"url": f"{vendor.url}/v1/models", "header": "x-api-key"}}},
    )
    outcome = rotator(kv, store).advance("svc/key")  # a generated key the vendor never heard of
    assert outcome.result == Result.FAILED and outcome.failed_step == Step.TEST
    assert "answered 401" in outcome.detail
    assert store.get_keyset("svc/key").primary.secret.reveal() == old
    pending = store.get_pending("svc/key")
    assert pending is not None
    vendor.state.add_key(pending.secret.reveal())  # now the upstream accepts it
    assert rotator(kv, store).advance("svc/key").result == Result.ROTATED


def test_hint_matching() -> None:
    value = "sk-ant-api03-" + canary()
    hint = value[:16] + "..." + value[-4:]  # the Admin API's partial_key_hint shape
    assert matches_hint(value, hint)
    assert not matches_hint(value[:-1] + "#", hint)
    assert not matches_hint("anything", "no-dots")


def test_anthropic_issuer_stage_verify_promote_deactivate(
    store: FileProvider, vendor: VendorAPI
) -> None:
    admin = "sk-ant-admin01-" + canary("admin")
    vendor.state.admin_keys.add(admin)
    store.create("anthropic/admin", SecretValue(admin))
    old = "sk-ant-api03-" + canary("old")
    old_id = vendor.state.add_key(old)
    other = "sk-ant-api03-" + canary("other")
    vendor.state.add_key(other)
    store.create(
        "anthropic/prod", SecretValue(old), created_at=datetime.now(UTC) - timedelta(days=95)
    )
    kv = kv_with(
        store,
        issuers={
            "claude": {"type": "anthropic", "admin_key": "anthropic/admin", "base_url": vendor.url}
        },
        keys={"anthropic/prod": {"issuer": "claude"}},
    )
    engine = rotator(kv, store)
    needs = engine.advance("anthropic/prod")
    assert needs.result == Result.NEEDS_STAGING and "keyvault stage" in needs.detail

    bad = "sk-ant-api03-" + canary("typo")
    store.stage("anthropic/prod", SecretValue(bad))
    refused = engine.advance("anthropic/prod")
    assert refused.result == Result.FAILED and refused.failed_step == Step.TEST
    assert store.get_keyset("anthropic/prod").primary.secret.reveal() == old

    pending = store.describe("anthropic/prod").pending
    assert pending is not None
    store.discard_pending("anthropic/prod", pending_version=pending.version)
    new = "sk-ant-api03-" + canary("new")
    vendor.state.add_key(new)
    store.stage("anthropic/prod", SecretValue(new))
    assert engine.advance("anthropic/prod").result == Result.ROTATED
    assert vendor.state.status_of(old) == "active", "still valid through grace"

    store._clock.advance(timedelta(days=8))  # type: ignore[attr-defined]
    assert engine.advance("anthropic/prod").result == Result.RETIRED
    assert vendor.state.keys[old_id]["status"] == "inactive"
    assert vendor.state.status_of(other) == "active"
    assert vendor.state.status_of(new) == "active"
    assert fingerprint(admin) in vendor.state.seen


def test_entry_point_issuer(
    store: FileProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "site" / "keyvault_fake_issuer-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: keyvault-fake-issuer\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[keyvault.issuers]\nprefixed = tests.fake_issuer:make\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    store.create(
        "svc/key", SecretValue(canary()), created_at=datetime.now(UTC) - timedelta(days=85)
    )
    kv = kv_with(
        store,
        issuers={"custom": {"type": "prefixed", "prefix": "acme_"}},
        keys={"svc/key": {"issuer": "custom"}},
    )
    assert rotator(kv, store).advance("svc/key").result == Result.ROTATED
    keyset = store.get_keyset("svc/key")
    assert keyset.primary.secret.reveal().startswith("acme_")
    assert keyset.primary.ref == "plugin-ref"


def test_unknown_issuer_type_is_a_config_error(store: FileProvider) -> None:
    kv = kv_with(store, issuers={"custom": {"type": "no-such-plugin"}})
    with pytest.raises(
        ConfigError, match=r"\[issuers.custom\] type .no-such-plugin. is neither built in"
    ):
        build_issuer(kv, "custom")


def test_generated_issuer_options(store: FileProvider) -> None:
    kv = kv_with(
        store,
        issuers={
            "short": {
                "type": "generated",
                "length": 20,
                "prefix": "kv_",
                "alphabet": "0123456789abcdef",
            }
        },
    )
    issued = build_issuer(kv, "short").create("x")
    raw = issued.value.reveal()
    assert raw.startswith("kv_") and len(raw) == 23
    assert set(raw[3:]) <= set("0123456789abcdef")


assert sys.version_info >= (3, 11)
