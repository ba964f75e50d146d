"""A newcomer's rough edges: bad input is exit 2 with one line naming the problem and the
fix, extras are named when missing, output shows data as written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from keyvault.errors import ConfigError
from rotation.cli import cli
from rotation.config import parse_config
from tests.conftest import STANDARD_CONFIG
from tests.leaks import canary

CONFIG = STANDARD_CONFIG


def run(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "unexpected" not in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ('\n[policies.huge]\nmax_age = "99999999999d"\n', ("max_age", "100 years")),
        ('\n[service]\ninterval = "0s"\n', ("interval", "at least 30s")),
    ],
)
def test_bad_config_values_are_one_line(workdir: Path, extra: str, needles: tuple[str]) -> None:
    (workdir / "keyvault.toml").write_text(CONFIG + extra)
    one_line_error(run("list"), "keyvault.toml", *needles)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["serve", "--port", "70000"], ("--port 70000", "0..65535")),
        (["serve", "--port", "-1"], ("--port -1",)),
        (["serve", "--interval", "0s"], ("--interval", "at least 30s")),
        (["--config", ".", "list"], ("is a directory", "keyvault.toml")),
        (["put", "big/value"], ("larger than 16384 bytes",)),
    ],
)
def test_bad_command_lines_are_one_line(
    workdir: Path, args: list[str], needles: tuple[str]
) -> None:
    one_line_error(run(*args, input="x" * (10 * 1024 * 1024)), *needles)


def test_a_config_without_providers_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no providers are configured"):
        parse_config({})


def test_audit_reports_a_configured_key_the_store_lacks(workdir: Path) -> None:
    (workdir / "keyvault.toml").write_text(CONFIG + '\n[keys."typo/key"]\nissuer = "manual"\n')
    run("put", "real/key", input=canary())
    audit = run("audit", "--format", "json")
    assert audit.exit_code == 3, audit.output
    rows = {row["name"]: row for row in json.loads(audit.stdout)["keys"]}
    assert (
        rows["typo/key"]["status"] == "error"
        and "keyvault put typo/key" in rows["typo/key"]["note"]
    )
    assert rows["real/key"]["status"] == "ok"


def test_audit_table_prints_bracketed_text_as_written(workdir: Path) -> None:
    (workdir / "keyvault.toml").write_text(CONFIG + '\n[keys."typo/key"]\nissuer = "manual"\n')
    table = run("audit")
    assert '[keys."typo/key"]' in table.stdout.replace("\n", "").replace("│", "").replace(
        " ", ""
    ) or ("[keys." in table.stdout)


def test_put_created_at_takes_an_age(workdir: Path) -> None:
    assert run("put", "old/key", "--created-at", "120d", input=canary()).exit_code == 0
    row = json.loads(run("audit", "--format", "json").stdout)["keys"][0]
    assert row["status"] == "overdue" and 119.9 < row["age_days"] < 120.1


def test_missing_extras_name_the_distribution(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Run where boto3 and the Anthropic SDK cannot be imported."""
    script = f"""
import sys
sys.modules["boto3"] = None
sys.modules["anthropic"] = None
from rotation.config import parse_config
from keyvault.errors import ConfigError
from keyvault.providers import build_provider
from keyvault.registry import KeyVault
config = parse_config(
    {{"providers": {{"local": {{"type": "file", "path": "s.db", "master_key_kms": "alias/x"}}}}}},
    source=__import__("pathlib").Path({str(tmp_path)!r}) / "keyvault.toml",
)
for attempt in (
    lambda: build_provider(config, "local", create=True),
    lambda: KeyVault(config).anthropic("anthropic/prod"),
):
    try:
        attempt()
    except ConfigError as exc:
        print(exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    kms, sdk = done.stdout.strip().splitlines()
    assert "keeps its master key wrapped by AWS KMS" in kms
    assert "pip install 'keyvault-rotation[aws]'" in kms
    assert "kv.anthropic()" in sdk and "pip install 'keyvault-rotation[anthropic]'" in sdk


def test_the_package_is_ours_and_licensed() -> None:
    from importlib.metadata import metadata

    meta = metadata("keyvault-rotation")
    assert meta["Name"] == "keyvault-rotation"
    assert (
        (Path(__file__).resolve().parents[1] / "LICENSE")
        .read_text()
        .startswith("\n" * 0 + " " * 33 + "Apache License")
    )
