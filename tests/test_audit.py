"""Audit reports from real stores: every status, every format, CI gates, a browser's view."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result

from keyvault.masterkey import keyring_from_file
from keyvault.providers.base import KeyProvider
from keyvault.providers.file import FileProvider
from keyvault.secret import SecretValue
from rotation import report
from rotation.audit import audit
from rotation.cli import cli
from rotation.status import Status
from tests.conftest import STANDARD_CONFIG
from tests.leaks import assert_not_leaked, canary
from tests.rotation_helpers import make_kv

Names = Callable[[str], str]


@pytest.fixture
def now() -> datetime:
    """The time each test audits at, taken when the test starts (not at import)."""
    return datetime.now(UTC)


def seed(provider: KeyProvider, key_name: Names, now: datetime) -> dict[str, str]:
    """One key per status, with chosen ages; returns name → expected status."""
    names = {s: key_name(s) for s in ("ok", "due", "overdue", "pending", "grace")}
    provider.create(names["ok"], SecretValue(canary()), created_at=now - timedelta(days=10))
    provider.create(names["due"], SecretValue(canary()), created_at=now - timedelta(days=85))
    provider.create(names["overdue"], SecretValue(canary()), created_at=now - timedelta(days=95))
    provider.create(names["pending"], SecretValue(canary()), created_at=now - timedelta(days=30))
    provider.stage(names["pending"], SecretValue(canary()))
    v1 = provider.create(names["grace"], SecretValue(canary()), created_at=now - timedelta(days=85))
    staged = provider.stage(names["grace"], SecretValue(canary()))
    assert staged.pending is not None
    provider.promote(
        names["grace"], pending_version=staged.pending.version, expected_current=v1.current.version
    )
    return {
        names["ok"]: "ok",
        names["due"]: "due",
        names["overdue"]: "overdue",
        names["pending"]: "rotating",
        names["grace"]: "rotating",
    }


def test_every_status_from_real_stores(
    provider: KeyProvider, key_name: Names, now: datetime
) -> None:
    expected = seed(provider, key_name, now)
    rows = audit(make_kv(provider), now)
    got = {row.name: str(row.status) for row in rows if row.name in expected}
    assert got == expected
    severities = [row.severity for row in rows]
    assert severities == sorted(severities, reverse=True), "worst first"
    grace = next(r for r in rows if expected.get(r.name) == "rotating" and r.secondary_fingerprint)
    assert grace.secondary_retire_at is not None and grace.last_rotation is not None
    assert grace.secondary_retire_at - grace.last_rotation == timedelta(days=7)
    pending = next(r for r in rows if r.pending_fingerprint is not None)
    assert "pending" in pending.note


def test_read_only_and_error_rows(
    file_provider: FileProvider, monkeypatch: pytest.MonkeyPatch, now: datetime
) -> None:
    from keyvault.registry import KeyVault
    from rotation.config import parse_config

    monkeypatch.setenv("CI_TOKEN", canary())
    monkeypatch.setenv("CI_TOKEN_CREATED_AT", (now - timedelta(days=20)).isoformat())
    monkeypatch.setenv("KV_TEST_TOKEN", "wrong")
    config = parse_config(
        {
            "default_provider": "local",
            "providers": {
                "local": {"type": "file"},
                "ci": {"type": "env", "keys": ["ci/token"]},
                "bao": {"type": "vault", "url": "http://127.0.0.1:9", "token_env": "KV_TEST_TOKEN"},
            },
        }
    )
    file_provider.create("a/key", SecretValue(canary()))
    kv = KeyVault(config, providers={"local": file_provider})
    rows = {(row.provider, row.name): row for row in audit(kv, now)}
    assert rows[("ci", "ci/token")].status == Status.READ_ONLY
    assert rows[("ci", "ci/token")].age is not None
    error = rows[("bao", "*")]
    assert error.status == Status.ERROR and error.error_code == 5 and "unreachable" in error.note
    assert rows[("local", "a/key")].status == Status.OK


# -- formats -------------------------------------------------------------------------------------


@pytest.fixture
def rows(file_provider: FileProvider, key_name: Names, now: datetime) -> list[Any]:
    seed(file_provider, key_name, now)
    return audit(make_kv(file_provider), now)


def test_json_validates_against_the_documented_schema(rows: list[Any], now: datetime) -> None:
    document = json.loads(report.to_json(rows, now))
    jsonschema.validate(document, report.schema(), format_checker=jsonschema.FormatChecker())
    assert document["summary"]["rotating"] == 2 and document["summary"]["overdue"] == 1
    assert all(isinstance(k["age_days"], float) for k in document["keys"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**document, "keys": [{"name": "x"}]}, report.schema())


def test_csv_round_trips(rows: list[Any]) -> None:
    parsed = list(csv.DictReader(io.StringIO(report.to_csv(rows))))
    expected = [
        {k: "" if v is None else str(v) for k, v in report.row_json(row).items()} for row in rows
    ]
    assert parsed == expected


def test_markdown_has_a_row_per_key(rows: list[Any]) -> None:
    lines = report.to_markdown(rows).strip().splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[0].startswith("| status | name |")


def test_no_format_ever_holds_a_value(file_provider: FileProvider, now: datetime) -> None:
    raws = [canary() for _ in range(3)]
    file_provider.create("a", SecretValue(raws[0]), created_at=now - timedelta(days=95))
    file_provider.stage("a", SecretValue(raws[1]))
    file_provider.create("b", SecretValue(raws[2]))
    rows = audit(make_kv(file_provider), now)
    texts = [
        report.to_json(rows, now),
        report.to_csv(rows),
        report.to_markdown(rows),
        report.to_html(rows, now),
    ]
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    console.print(report.to_table(rows))
    texts.append(console.file.getvalue())  # type: ignore[attr-defined]
    for text in texts:
        assert_not_leaked(text, *raws, where="an audit report")


# -- the CLI ---------------------------------------------------------------------------------------

CONFIG = STANDARD_CONFIG


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def local_store(workdir: Path) -> FileProvider:
    return FileProvider("local", workdir / "store.db", keyring_from_file(workdir / "master.key"))


def test_fail_on_exit_codes(workdir: Path, now: datetime) -> None:
    store = local_store(workdir)
    store.create("fresh", SecretValue(canary()), created_at=now - timedelta(days=5))
    assert run("audit", "--fail-on", "due").exit_code == 0
    store.create("due", SecretValue(canary()), created_at=now - timedelta(days=85))
    assert run("audit", "--fail-on", "overdue").exit_code == 0
    failed = run("audit", "--fail-on", "due")
    assert failed.exit_code == 1 and "due or worse: due" in failed.stderr
    store.create("overdue", SecretValue(canary()), created_at=now - timedelta(days=95))
    assert run("audit", "--fail-on", "overdue").exit_code == 1
    assert run("audit").exit_code == 0, "no gate, no failure"


def test_unreachable_provider_reports_the_rest_and_exits_5(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = workdir / "keyvault.toml"
    config.write_text(
        config.read_text() + '\n[providers.bao]\ntype = "vault"\nurl = "http://127.0.0.1:9"\n'
        'token_env = "KV_TEST_TOKEN"\n'
    )
    monkeypatch.setenv("KV_TEST_TOKEN", "x")
    local_store(workdir).create("a/key", SecretValue(canary()))
    result = run("audit", "--format", "json")
    assert result.exit_code == 5
    document = json.loads(result.stdout)
    statuses = {(k["provider"], k["name"]): k["status"] for k in document["keys"]}
    assert statuses == {("bao", "*"): "error", ("local", "a/key"): "ok"}
    assert "error: provider bao" in result.stderr


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown", "html"])
def test_every_format_from_the_cli(workdir: Path, fmt: str, now: datetime) -> None:
    raw = canary()
    local_store(workdir).create("a/key", SecretValue(raw), created_at=now - timedelta(days=85))
    result = run("audit", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert "a/key" in result.stdout
    assert_not_leaked(result.output, raw, where=f"audit --format {fmt}")
    out = workdir / f"audit.{fmt}"
    assert run("audit", "--format", fmt, "--output", str(out)).exit_code == 0
    assert "a/key" in out.read_text()


def test_no_progress_bar_when_piped(workdir: Path) -> None:
    local_store(workdir).create("a/key", SecretValue(canary()))
    result = run("audit", "--format", "json")
    assert "reading providers" not in result.stderr and result.stderr == ""


# -- the HTML page, as a person sees it ------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.skipif(
    _chromium() is None,
    reason="no Chromium here (Debian's `chromium` package; scripts/install-test-tools installs it)",
)
def test_html_report_renders_in_a_browser_with_its_chart(
    rows: list[Any], tmp_path: Path, now: datetime
) -> None:
    page = tmp_path / "audit.html"
    page.write_text(report.to_html(rows, now))
    browser = _chromium()
    assert browser is not None
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-1000:]
    assert 'class="chart"' in dom.stdout
    assert dom.stdout.count('class="bar"') == len(rows)
    shot = tmp_path / "audit.png"
    subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1200,900",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    data = shot.read_bytes()
    assert _png_size(data) == (1200, 900)
    assert len(data) > 20_000, "a page with a chart and a table, not a blank screen"
    keep = Path("/tmp/keyvault-audit-screenshot.png")
    keep.write_bytes(data)  # for a person to look at after the run


def test_a_terminal_shows_the_most_urgent_keys_and_a_summary(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Piped, the table has every key; on a terminal, the worst 50 and a count of the rest."""
    store = local_store(workdir)
    for index in range(60):
        age = 95 if index < 3 else 5
        store.create(f"fleet/k{index:02d}", SecretValue(canary()),
                     created_at=datetime.now(UTC) - timedelta(days=age))  # fmt: skip
    store.close()
    piped = run("audit")
    assert piped.stdout.count("fleet/k") == 60
    monkeypatch.setattr("rotation.render.console", _terminal_console)
    shown = run("audit")
    assert shown.stdout.count("fleet/k") == 50
    assert "60 keys (3 overdue, 57 ok)" in shown.stderr
    assert all(f"fleet/k0{i}" in shown.stdout for i in range(3))  # the overdue ones first
    everything = run("audit", "--all-rows")
    assert everything.stdout.count("fleet/k") == 60


def _terminal_console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(force_terminal=True, width=200, stderr=stderr, color_system=None)
