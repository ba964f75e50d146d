"""The CLI as a user drives it: init, put, get, list, their errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from keyvault.crypto import MasterKey
from keyvault.masterkey import write_key_file
from rotation.cli import cli
from tests.leaks import assert_not_leaked, canary

Run = Callable[..., Result]
WORKDIR_CONFIG = None  # init makes the config: each test starts from an empty directory


@pytest.fixture
def run(workdir: Path) -> Run:
    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def initialised(run: Run) -> Run:
    assert run("init").exit_code == 0
    return run


def test_init_creates_config_store_and_private_key(run: Run, workdir: Path) -> None:
    result = run("init")
    assert result.exit_code == 0, result.output
    assert (workdir / "keyvault.toml").is_file()
    assert (workdir / ".keyvault/store.db").is_file()
    assert (workdir / ".keyvault/master.key").stat().st_mode & 0o777 == 0o600


def test_init_refuses_to_overwrite(initialised: Run, workdir: Path) -> None:
    before = (workdir / ".keyvault/master.key").read_bytes()
    result = initialised("init")
    assert result.exit_code == 2
    assert "refusing to overwrite" in result.stderr
    assert (workdir / ".keyvault/master.key").read_bytes() == before


def test_put_get_list_never_show_the_value(initialised: Run) -> None:
    raw = canary()
    put = initialised("put", "anthropic/prod", "--environment", "prod", input=raw + "\n")
    assert put.exit_code == 0, put.output
    outputs = [put.output]
    for args in (
        ("get", "anthropic/prod"),
        ("get", "anthropic/prod", "--format", "json"),
        ("list",),
        ("list", "--format", "json"),
    ):
        result = initialised(*args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    for text in outputs:
        assert_not_leaked(text, raw, where="CLI output")
    assert "fp:" in outputs[1]


def test_reveal_prints_only_the_value(initialised: Run) -> None:
    raw = canary()
    initialised("put", "svc/key", input=raw)
    result = initialised("get", "svc/key", "--reveal")
    assert result.exit_code == 0
    assert result.stdout == raw + "\n"


def test_get_json_shape(initialised: Run) -> None:
    initialised("put", "svc/key", "--generate", "--environment", "dev")
    data = json.loads(initialised("get", "svc/key", "--format", "json").stdout)
    assert set(data) == {"name", "provider", "environment", "primary", "secondary"}
    assert data["name"] == "svc/key" and data["provider"] == "local"
    assert set(data["primary"]) == {"version", "fingerprint", "created_at"}
    assert data["primary"]["fingerprint"].startswith("fp:")
    assert data["secondary"] is None


def test_list_json_shape_and_created_at(initialised: Run) -> None:
    initialised("put", "old/key", "--created-at", "2020-01-01T00:00:00Z", input=canary())
    initialised("put", "new/key", "--generate")
    rows = {row["name"]: row for row in json.loads(initialised("list", "--format", "json").stdout)}
    assert set(rows) == {"old/key", "new/key"}
    assert set(rows["old/key"]) == {"name", "provider", "fingerprint", "age_days"}
    assert rows["old/key"]["age_days"] > 365 * 6
    assert rows["new/key"]["age_days"] < 1


def test_put_existing_points_to_rotate(initialised: Run) -> None:
    raw = canary()
    initialised("put", "svc/key", input=canary())
    result = initialised("put", "svc/key", input=raw)
    assert result.exit_code == 2
    assert "rotate" in result.stderr
    assert_not_leaked(result.output, raw, where="CLI error")


def test_put_reads_stdin_never_an_argument(initialised: Run) -> None:
    result = initialised("put", "svc/key", "some-value")
    assert result.exit_code == 2  # click: unexpected extra argument
    empty = initialised("put", "svc/key", input="")
    assert empty.exit_code == 2
    assert "no value on stdin" in empty.stderr


def test_put_rejects_bad_created_at(initialised: Run) -> None:
    assert initialised("put", "a", "--created-at", "last week", input=canary()).exit_code == 2
    future = initialised("put", "a", "--created-at", "2999-01-01T00:00:00Z", input=canary())
    assert future.exit_code == 2
    assert "future" in future.stderr


def test_invalid_key_name(initialised: Run) -> None:
    result = initialised("get", "Bad Name")
    assert result.exit_code == 2
    assert "invalid key name" in result.stderr


def test_not_found_is_3(initialised: Run) -> None:
    result = initialised("get", "no/such/key")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: key 'no/such/key' not found")


def test_missing_config_is_2(run: Run) -> None:
    result = run("list")
    assert result.exit_code == 2
    assert "keyvault init" in result.stderr


def test_broken_config_is_2_and_names_the_field(initialised: Run, workdir: Path) -> None:
    config = workdir / "keyvault.toml"
    config.write_text(config.read_text().replace('max_age = "90d"', 'max_age = "ninety"'))
    result = initialised("list")
    assert result.exit_code == 2
    assert f"{config}: [policies.default] max_age: invalid duration" in result.stderr
    assert "Traceback" not in result.output


def test_config_option_and_env(
    initialised: Run, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    initialised("put", "a", "--generate")
    elsewhere = workdir / "sub"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert initialised("list").exit_code == 2
    assert initialised("--config", str(workdir / "keyvault.toml"), "get", "a").exit_code == 0
    monkeypatch.setenv("KEYVAULT_CONFIG", str(workdir / "keyvault.toml"))
    assert initialised("get", "a").exit_code == 0


def test_read_only_provider_is_2(initialised: Run, workdir: Path) -> None:
    config = workdir / "keyvault.toml"
    config.write_text(config.read_text() + '\n[providers.ci]\ntype = "env"\n')
    result = initialised("put", "a", "--provider", "ci", input=canary())
    assert result.exit_code == 2
    assert "read-only" in result.stderr


def test_backend_unavailable_is_5(initialised: Run, workdir: Path) -> None:
    config = workdir / "keyvault.toml"
    (workdir / "a-directory.db").mkdir()
    config.write_text(config.read_text().replace(".keyvault/store.db", "a-directory.db"))
    result = initialised("list")
    assert result.exit_code == 5
    assert "a-directory.db cannot be opened" in result.stderr


def test_wrong_master_key_is_6(initialised: Run, workdir: Path) -> None:
    initialised("put", "a", "--generate")
    key_file = workdir / ".keyvault/master.key"
    key_file.unlink()
    write_key_file(key_file, [MasterKey.generate()])
    result = initialised("get", "a")
    assert result.exit_code == 6
    assert "wrong master key" in result.stderr


def test_group_readable_master_key_is_refused(initialised: Run, workdir: Path) -> None:
    (workdir / ".keyvault/master.key").chmod(0o644)
    result = initialised("list")
    assert result.exit_code == 2
    assert "chmod 600" in result.stderr


def test_master_key_from_env(
    initialised: Run, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = workdir / "keyvault.toml"
    text = (
        config.read_text()
        .replace('master_key_file = ".keyvault/master.key"', 'master_key_env = "KV_TEST_MASTER"')
        .replace(".keyvault/store.db", "env-store.db")
    )
    config.write_text(text)
    assert initialised("list").exit_code == 2
    monkeypatch.setenv("KV_TEST_MASTER", MasterKey.generate().to_base64())
    missing = initialised("list")
    assert missing.exit_code == 2 and "env-store.db does not exist" in missing.stderr
    assert initialised("--config", "keyvault.toml", "init").exit_code == 0
    assert initialised("put", "a", "--generate").exit_code == 0


def test_debug_shows_the_traceback(initialised: Run) -> None:
    plain = initialised("get", "missing")
    debug = initialised("--debug", "get", "missing")
    assert "Traceback" not in plain.stderr
    assert "Traceback" in debug.stderr


def test_console_script_end_to_end(workdir: Path) -> None:
    """The installed `keyvault` command, as the README runs it."""
    exe = Path(sys.executable).with_name("keyvault")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    raw = canary()

    def sh(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(exe), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=workdir,
            timeout=60,
        )

    assert sh("init").returncode == 0
    assert sh("put", "demo/key", stdin=raw).returncode == 0
    listing = sh("list")
    assert listing.returncode == 0 and "demo/key" in listing.stdout
    assert_not_leaked(listing.stdout + listing.stderr, raw, where="CLI output")
    assert sh("get", "demo/key", "--reveal").stdout == raw + "\n"
    missing = sh("get", "nope")
    assert missing.returncode == 3 and "Traceback" not in missing.stderr


def test_the_terminal_progress_bar_shows_count_rate_and_time_left() -> None:
    import io

    from rich.console import Console

    from rotation import render

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with render.progress(console, "rotating") as bar:
        task = bar.add_task("rotating", total=10)
        for done in range(1, 6):
            bar.update(task, completed=done)
        bar.refresh()
        shown = out.getvalue()
    assert "rotating" in shown and "5/10" in shown and "keys/s" in shown
