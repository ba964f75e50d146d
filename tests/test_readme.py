"""The README as a newcomer reads it: every Python snippet runs as written (against a
loopback vendor API instead of the real one), every ``keyvault.…`` name it mentions
exists after a plain ``import keyvault``, and every table renders whole."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from keyvault.secret import SecretValue
from tests.conftest import prepare_workdir
from tests.leaks import canary
from tests.vendor_api import VendorAPI

README = Path(__file__).resolve().parents[1] / "README.md"
REAL_API = "https://api.anthropic.com"


def _python_blocks() -> list[str]:
    tokens = MarkdownIt().parse(README.read_text())
    return [t.content for t in tokens if t.type == "fence" and t.info.strip() == "python"]


def test_python_snippets_run_as_written(
    vendor: VendorAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEYVAULT_ENV", raising=False)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", vendor.url)  # where the SDK's default points
    prepare_workdir(
        tmp_path,
        '[providers.local]\ntype = "file"\npath = "store.db"\nmaster_key_file = "master.key"\n',
    )
    from keyvault.providers import build_provider
    from rotation.config import load_config

    store = build_provider(load_config(tmp_path / "keyvault.toml"), "local")
    raw = canary()
    store.create("anthropic/prod", SecretValue(raw))
    store.close()
    vendor.state.add_key(raw)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block.replace(REAL_API, vendor.url), str(README), "exec"), namespace)  # noqa: S102
    assert vendor.state.statuses[200] >= 2  # client.get and claude.messages.create
    assert set(vendor.state.statuses) == {200}


#: dotted names the README uses that are not attributes: loggers, an entry-point group, a file
NOT_ATTRIBUTES = {"keyvault.cache", "keyvault.issuers", "keyvault.toml"}


def test_every_keyvault_name_the_readme_mentions_exists() -> None:
    spans = [
        child.content
        for token in MarkdownIt().parse(README.read_text())
        if token.children
        for child in token.children
        if child.type == "code_inline"
    ]
    names = sorted(
        {name for span in spans for name in re.findall(r"\bkeyvault(?:\.[A-Za-z_]\w*)+", span)}
        - NOT_ATTRIBUTES
    )
    assert "keyvault.CircuitOpenError" in names and "keyvault.client.CacheSettings" in names
    script = "import keyvault\n" + "\n".join(names)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_table_renders_whole() -> None:
    """A blank line inside a table ends it, and the rows after it render as plain text."""
    text = README.read_text()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    rendered_rows = sum(1 for t in tokens if t.type == "tr_open")
    lines = [line for line in text.splitlines() if line.startswith("|")]
    separators = [line for line in lines if re.fullmatch(r"\|[\s|:-]+\|", line)]
    assert rendered_rows == len(lines) - len(separators)
