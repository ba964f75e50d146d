"""The vault backend against a real OpenBao server: auth, policies, outages, Transit, CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import hvac
import pytest
from click.testing import CliRunner

from keyvault.errors import (
    AuthError,
    BackendUnavailableError,
    ConfigError,
    KeyExistsError,
    KeyNotFoundError,
)
from keyvault.providers.vault import AppRoleLogin, VaultProvider
from keyvault.secret import SecretValue
from rotation.cli import cli
from tests.conftest import Clock
from tests.leaks import assert_not_leaked, canary
from tests.servers import BaoServer


def _provider(server: BaoServer, prefix: str, token: str, **kwargs: object) -> VaultProvider:
    return VaultProvider(
        "bao", hvac.Client(url=server.url), prefix=prefix, environ={"VAULT_TOKEN": token}, **kwargs
    )  # type: ignore[arg-type]


def _policy_token(root: hvac.Client, name: str, policy: str, **token_args: object) -> str:
    root.sys.create_or_update_policy(name=name, policy=policy)
    return str(root.auth.token.create(policies=[name], **token_args)["auth"]["client_token"])


def _read_only_policy(prefix: str) -> str:
    return f"""
path "secret/data/{prefix}*" {{ capabilities = ["read"] }}
path "secret/metadata/{prefix}*" {{ capabilities = ["read", "list"] }}
"""


def _full_policy(prefix: str) -> str:
    return f"""
path "secret/data/{prefix}*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "secret/metadata/{prefix}*" {{ capabilities = ["create", "read", "update", "delete", "list"] }}
"""


def test_listing_walks_folders(vault_provider: VaultProvider) -> None:
    names = ["a", "team/b", "team/sub/c.d", "x-y/z_1"]
    for name in names:
        vault_provider.create(name, SecretValue(canary()))
    assert vault_provider.list_names() == sorted(names)
    assert sorted(info.name for info in vault_provider.list_keys()) == sorted(names)
    assert vault_provider.list_keys() == vault_provider.list_keys_sequential()


def test_empty_prefix_lists_nothing(vault_provider: VaultProvider) -> None:
    assert vault_provider.list_keys() == []


def test_listing_reads_no_secret_data(
    openbao: BaoServer, vault_root: hvac.Client, vault_prefix: str
) -> None:
    """An auditor token that cannot read data still lists every key with fingerprints."""
    writer = _provider(openbao, vault_prefix, openbao.root_token)
    value = SecretValue(canary())
    writer.create("svc/key", value, environment="prod")
    auditor_policy = f'path "secret/metadata/{vault_prefix}*" {{ capabilities = ["read", "list"] }}'
    token = _policy_token(vault_root, f"auditor-{vault_prefix[:-1]}", auditor_policy)
    auditor = _provider(openbao, vault_prefix, token)
    (info,) = auditor.list_keys()
    assert info.current.fingerprint == value.fingerprint
    assert info.environment == "prod"
    with pytest.raises(AuthError):
        auditor.get_keyset("svc/key")


def test_stale_index_falls_back_to_data(
    vault_provider: VaultProvider, vault_root: hvac.Client
) -> None:
    """A writer that died between its data write and its metadata write misleads nobody."""
    old, new = SecretValue(canary()), SecretValue(canary())
    vault_provider.create("k", old)
    path = vault_provider.prefix + "k"
    doc = vault_root.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
    data = doc["data"]["data"]
    data["current"]["value"] = new.reveal()
    vault_root.secrets.kv.v2.create_or_update_secret(path=path, secret=data)  # no index update
    (info,) = vault_provider.list_keys()
    assert info.current.fingerprint == new.fingerprint


def test_history_is_kv_versions(vault_provider: VaultProvider) -> None:
    v1 = vault_provider.create("h", SecretValue(canary())).current.version
    staged = vault_provider.stage("h", SecretValue(canary()))
    assert staged.pending is not None
    vault_provider.promote("h", pending_version=staged.pending.version, expected_current=v1)
    vault_provider.retire("h", expected_previous=v1)
    assert vault_provider.kv_versions("h") == 4


def test_read_only_token_cannot_promote_and_nothing_changes(
    openbao: BaoServer, vault_root: hvac.Client, vault_prefix: str
) -> None:
    root = _provider(openbao, vault_prefix, openbao.root_token)
    current = SecretValue(canary())
    v1 = root.create("ro/key", current).current.version
    staged = root.stage("ro/key", SecretValue(canary()))
    assert staged.pending is not None
    token = _policy_token(vault_root, f"ro-{vault_prefix[:-1]}", _read_only_policy(vault_prefix))
    reader = _provider(openbao, vault_prefix, token)
    assert reader.get_keyset("ro/key").primary.secret == current
    with pytest.raises(AuthError, match=rf"denied write on secret/{vault_prefix}ro/key"):
        reader.promote("ro/key", pending_version=staged.pending.version, expected_current=v1)
    after = root.describe("ro/key")
    assert after.current.version == v1
    assert after.pending is not None and after.pending.version == staged.pending.version


def test_wrong_token_is_an_auth_error(openbao: BaoServer, vault_prefix: str) -> None:
    provider = _provider(openbao, vault_prefix, "not-a-real-token")
    with pytest.raises(AuthError, match="VAULT_TOKEN is invalid"):
        provider.list_keys()


def test_missing_token_variable_is_a_config_error(openbao: BaoServer, vault_prefix: str) -> None:
    provider = VaultProvider("bao", hvac.Client(url=openbao.url), prefix=vault_prefix, environ={})
    with pytest.raises(ConfigError, match="VAULT_TOKEN is not set"):
        provider.list_keys()


@pytest.fixture
def approle(
    openbao: BaoServer, vault_root: hvac.Client, vault_prefix: str
) -> Iterator[dict[str, str]]:
    if "approle/" not in vault_root.sys.list_auth_methods()["data"]:
        vault_root.sys.enable_auth_method("approle")
    policy = f"kv-{vault_prefix[:-1]}"
    vault_root.sys.create_or_update_policy(name=policy, policy=_full_policy(vault_prefix))
    role = f"role-{uuid.uuid4().hex[:8]}"
    vault_root.auth.approle.create_or_update_approle(
        role, token_policies=[policy], token_ttl="1h", token_max_ttl="2h"
    )
    role_id = vault_root.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = vault_root.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    yield {"ROLE_ID": role_id, "SECRET_ID": secret_id}


def test_approle_login_limited_to_the_prefix(
    openbao: BaoServer, vault_prefix: str, approle: dict[str, str]
) -> None:
    login = AppRoleLogin(role_id_env="ROLE_ID", secret_id_env="SECRET_ID")
    provider = VaultProvider(
        "bao", hvac.Client(url=openbao.url), prefix=vault_prefix, approle=login, environ=approle
    )
    provider.create("app/key", SecretValue(canary()))
    assert [info.name for info in provider.list_keys()] == ["app/key"]
    outside = VaultProvider(
        "bao", hvac.Client(url=openbao.url), prefix="elsewhere/", approle=login, environ=approle
    )
    with pytest.raises(AuthError, match="denied write on secret/elsewhere/x"):
        outside.create("x", SecretValue(canary()))


def test_approle_logs_in_again_after_token_revoked(
    openbao: BaoServer, vault_root: hvac.Client, vault_prefix: str, approle: dict[str, str]
) -> None:
    login = AppRoleLogin(role_id_env="ROLE_ID", secret_id_env="SECRET_ID")
    provider = VaultProvider(
        "bao", hvac.Client(url=openbao.url), prefix=vault_prefix, approle=login, environ=approle
    )
    provider.create("k", SecretValue(canary()))
    first_token = provider.client.token
    vault_root.auth.token.revoke(first_token)
    assert provider.describe("k").name == "k"
    assert provider.client.token != first_token


def test_approle_wrong_secret_id(
    openbao: BaoServer, vault_prefix: str, approle: dict[str, str]
) -> None:
    login = AppRoleLogin(role_id_env="ROLE_ID", secret_id_env="SECRET_ID")
    bad = {**approle, "SECRET_ID": str(uuid.uuid4())}
    provider = VaultProvider(
        "bao", hvac.Client(url=openbao.url), prefix=vault_prefix, approle=login, environ=bad
    )
    with pytest.raises(AuthError, match="AppRole login refused"):
        provider.list_keys()


def test_approle_secret_id_file(
    openbao: BaoServer, vault_prefix: str, approle: dict[str, str], tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(approle["SECRET_ID"] + "\n")
    login = AppRoleLogin(role_id_env="ROLE_ID", secret_id_file=secret_file)
    provider = VaultProvider(
        "bao",
        hvac.Client(url=openbao.url),
        prefix=vault_prefix,
        approle=login,
        environ={"ROLE_ID": approle["ROLE_ID"]},
    )
    assert provider.list_keys() == []


def test_short_lived_token_is_renewed(
    openbao: BaoServer, vault_root: hvac.Client, vault_prefix: str
) -> None:
    """Half the TTL later (on the keeper's clock, moved by hand), the next call renews the
    token: the server records the renewal. No waiting on the wall clock."""
    token = _policy_token(
        vault_root,
        f"short-{vault_prefix[:-1]}",
        _full_policy(vault_prefix),
        ttl="60s",
        explicit_max_ttl="600s",
        renewable=True,
    )
    elapsed = [0.0]
    provider = _provider(openbao, vault_prefix, token, monotonic=lambda: elapsed[0])
    provider.create("k", SecretValue(canary()))

    def renewals() -> int:
        return int(vault_root.auth.token.lookup(token)["data"].get("last_renewal_time") or 0)

    assert renewals() == 0
    elapsed[0] = 29.0  # not yet half the TTL
    provider.describe("k")
    assert renewals() == 0
    elapsed[0] = 31.0
    assert provider.describe("k").name == "k"
    assert renewals() > 0


def test_server_down_then_back(vault_prefix: str) -> None:
    server = BaoServer().start()
    try:
        provider = _provider(server, vault_prefix, server.root_token)
        provider.create("k", SecretValue(canary()))
        server.stop()
        with pytest.raises(BackendUnavailableError, match="unreachable"):
            provider.describe("k")
        with pytest.raises(BackendUnavailableError):
            provider.list_keys()
        server.start()  # a dev server starts empty, with the same address and token
        with pytest.raises(KeyNotFoundError):
            provider.describe("k")
        provider.create("k", SecretValue(canary()))
        assert provider.describe("k").name == "k"
    finally:
        server.cleanup()


def test_errors_carry_no_secret(vault_provider: VaultProvider) -> None:
    raw = canary()
    vault_provider.create("leak", SecretValue(raw))
    with pytest.raises(KeyExistsError) as excinfo:
        vault_provider.create("leak", SecretValue(raw))
    assert_not_leaked(str(excinfo.value) + repr(excinfo.value), raw, where="the error")
    assert excinfo.value.__suppress_context__


# -- Transit ---------------------------------------------------------------------------------


def test_transit_rotation_and_min_decryption_after_grace(
    openbao: BaoServer, vault_root: hvac.Client, vault_prefix: str
) -> None:
    if "transit/" not in vault_root.sys.list_mounted_secrets_engines()["data"]:
        vault_root.sys.enable_secrets_engine("transit")
    key = f"tk-{uuid.uuid4().hex[:8]}"
    vault_root.secrets.transit.create_key(key)
    clock = Clock()
    provider = _provider(
        openbao, vault_prefix, openbao.root_token, transit_keys=(key,), clock=clock
    )
    clock.now = provider.list_server_keys()[0].created_at + timedelta(minutes=1)  # type: ignore[operator]
    (info,) = provider.list_server_keys()
    assert info.kind == "vault-transit" and info.latest_version == "1"
    assert info.min_decryption_version == "1" and info.last_rotated_at is None

    ciphertext = vault_root.secrets.transit.encrypt_data(key, plaintext="aGVsbG8=")["data"][
        "ciphertext"
    ]
    rotated = provider.rotate_server_key(key)
    assert rotated.latest_version == "2" and rotated.last_rotated_at is not None

    same = provider.retire_server_key_versions(key, grace=timedelta(days=7))
    assert same.min_decryption_version == "1", "old versions keep decrypting through grace"
    vault_root.secrets.transit.decrypt_data(key, ciphertext=ciphertext)

    clock.advance(timedelta(days=8))
    after = provider.retire_server_key_versions(key, grace=timedelta(days=7))
    assert after.min_decryption_version == "2"
    with pytest.raises(hvac.exceptions.InvalidRequest):
        vault_root.secrets.transit.decrypt_data(key, ciphertext=ciphertext)


def test_transit_missing_key(vault_provider: VaultProvider) -> None:
    with pytest.raises(KeyNotFoundError):
        vault_provider.rotate_server_key("no-such-transit-key")


# -- the CLI with a vault provider -------------------------------------------------------------


def _vault_config(tmp_path: Path, server: BaoServer, prefix: str) -> Path:
    path = tmp_path / "keyvault.toml"
    path.write_text(
        f"""
default_provider = "bao"

[providers.bao]
type = "vault"
url = "{server.url}"
prefix = "{prefix}"
token_env = "KV_TEST_VAULT_TOKEN"
"""
    )
    return path


def test_cli_put_get_list_on_vault(
    openbao: BaoServer, vault_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _vault_config(tmp_path, openbao, vault_prefix)
    monkeypatch.setenv("KV_TEST_VAULT_TOKEN", openbao.root_token)
    runner = CliRunner()
    raw = canary()

    def run(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, ["--config", str(config), *args], input=input)

    assert run("put", "anthropic/prod", "--environment", "prod", input=raw).exit_code == 0
    got = run("get", "anthropic/prod", "--format", "json")
    assert got.exit_code == 0, got.output
    data = json.loads(got.stdout)
    assert (
        data["provider"] == "bao" and data["primary"]["fingerprint"] == SecretValue(raw).fingerprint
    )
    listed = run("list", "--format", "json")
    assert [row["name"] for row in json.loads(listed.stdout)] == ["anthropic/prod"]
    for result in (got, listed):
        assert_not_leaked(result.output, raw, where="CLI output")
    assert run("get", "anthropic/prod", "--reveal").stdout == raw + "\n"
    assert run("get", "missing/key").exit_code == 3


def test_cli_wrong_token_is_4_and_unreachable_is_5(
    openbao: BaoServer, vault_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _vault_config(tmp_path, openbao, vault_prefix)
    monkeypatch.setenv("KV_TEST_VAULT_TOKEN", "wrong-token")
    wrong = CliRunner().invoke(cli, ["--config", str(config), "list"])
    assert wrong.exit_code == 4
    assert "invalid, expired or revoked" in wrong.stderr
    config.write_text(config.read_text().replace(openbao.url, "http://127.0.0.1:9"))
    down = CliRunner().invoke(cli, ["--config", str(config), "get", "a"])
    assert down.exit_code == 5
    assert "unreachable" in down.stderr
