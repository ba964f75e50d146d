"""The access log: every read of a value is an event in a chain that edits cannot hide."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rotation.cli import cli
from tests.leaks import assert_not_leaked, canary


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def events() -> list[dict[str, object]]:
    result = run("audit", "--access", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_reads_are_logged_with_their_action_and_actor(workdir: Path) -> None:
    raw = canary()
    run("put", "svc/key", "--created-at", "100d", input=raw)
    assert run("get", "svc/key", "--reveal").exit_code == 0
    assert run("rotate", "svc/key").exit_code == 0  # the test step reads the pending key
    logged = events()
    actions = [e["action"] for e in logged]
    assert "reveal" in actions and "test" in actions
    reveal = next(e for e in logged if e["action"] == "reveal")
    assert reveal["key"] == "svc/key" and str(reveal["fingerprint"]).startswith("fp:")
    assert "@" in str(reveal["actor"]) and "pid" in str(reveal["actor"])
    only = run("audit", "--access", "--key", "nope/key", "--format", "json")
    assert json.loads(only.stdout) == []
    recent = run("audit", "--access", "--since", "1h", "--format", "json")
    assert len(json.loads(recent.stdout)) == len(logged)
    table = run("audit", "--access")
    assert table.exit_code == 0 and "reveal" in table.stdout
    assert_not_leaked(table.output + json.dumps(logged), raw, where="the access log")
    assert run("audit", "--access", "--verify").exit_code == 0


TAMPERING = {
    "a deleted row": "DELETE FROM access_log WHERE seq = 2",
    "an edited row": "UPDATE access_log SET actor = 'someone-else' WHERE seq = 2",
    "reordered rows": "UPDATE access_log SET seq = CASE seq WHEN 1 THEN 2 ELSE 1 END "
    "WHERE seq IN (1, 2)",
    "the last row cut off": "DELETE FROM access_log WHERE seq = (SELECT MAX(seq) FROM access_log)",
    "a forged MAC": "UPDATE access_log SET mac = 'mk:0:00' WHERE seq = 1",
}


@pytest.mark.parametrize("edit", list(TAMPERING))
def test_a_tampered_log_fails_verify_naming_the_first_bad_row(workdir: Path, edit: str) -> None:
    run("put", "svc/key", input=canary())
    for _ in range(3):
        assert run("get", "svc/key", "--reveal").exit_code == 0
    db = sqlite3.connect(workdir / "store.db")
    with db:
        if edit == "reordered rows":  # through a free seq: the primary key forbids a swap
            db.execute("UPDATE access_log SET seq = 99 WHERE seq = 1")
            db.execute("UPDATE access_log SET seq = 1 WHERE seq = 2")
            db.execute("UPDATE access_log SET seq = 2 WHERE seq = 99")
        else:
            db.execute(TAMPERING[edit])
    db.close()
    verified = run("audit", "--access", "--verify")
    assert verified.exit_code == 6, verified.output
    assert "access log broken" in verified.stderr and "row" in verified.stderr


def test_rekey_keeps_the_log_verifiable(workdir: Path) -> None:
    run("put", "svc/key", input=canary())
    run("get", "svc/key", "--reveal")
    assert run("rekey").exit_code == 0
    assert run("audit", "--access", "--verify").exit_code == 0
    assert len(events()) == 1


def test_vault_reads_go_to_a_local_chained_file(
    workdir: Path, openbao, vault_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KV_ACCESS_TOKEN", openbao.root_token)
    monkeypatch.setenv("KV_LOG_KEY", base64.b64encode(os.urandom(32)).decode())
    (workdir / "keyvault.toml").write_text(
        f"""
[providers.bao]
type = "vault"
url = "{openbao.url}"
prefix = "{vault_prefix}"
token_env = "KV_ACCESS_TOKEN"

[access_log]
path = "access.jsonl"
mac_key_env = "KV_LOG_KEY"
"""
    )
    raw = canary()
    assert run("put", "svc/key", input=raw).exit_code == 0
    assert run("get", "svc/key", "--reveal").exit_code == 0
    logged = events()
    assert [e["action"] for e in logged] == ["reveal"] and logged[0]["provider"] == "bao"
    assert run("audit", "--access", "--verify").exit_code == 0
    text = (workdir / "access.jsonl").read_text()
    assert_not_leaked(text, raw, where="the local access log")
    (workdir / "access.jsonl").write_text(text.replace("reveal", "client"))
    assert run("audit", "--access", "--verify").exit_code == 6
