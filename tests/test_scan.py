"""``keyvault scan`` on real trees: a git work tree and a plain folder with .gitignore."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from click.testing import CliRunner, Result

from keyvault.secret import fingerprint
from rotation.cli import cli
from tests.leaks import assert_not_leaked, canary


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_finds_a_planted_key_by_fingerprint_and_respects_gitignore(workdir: Path) -> None:
    raw = canary()
    assert run("put", "svc/key", input=raw).exit_code == 0
    shape = "sk-ant-api03-" + "A" * 40
    src = tree(
        workdir / "src",
        {
            "app/deep/settings.py": f'API_KEY = "{raw}"\n',
            "ignored/leak.txt": raw,
            ".gitignore": "ignored/\n",
            "clean.py": "print('hello')\n",
            "other.md": f"example: {shape}\n",
        },
    )
    for where in ("plain folder", "git work tree"):
        if where == "git work tree":
            subprocess.run(["git", "init", "-q", str(src)], check=True)
        result = run("scan", str(src), "--format", "json")
        assert result.exit_code == 1, (where, result.output)
        found = json.loads(result.stdout)
        assert {(Path(f["path"]).name, f["line"], f["kind"]) for f in found} == {
            ("settings.py", 1, "key"),
            ("other.md", 1, "anthropic-api-key"),
        }, where
        by_kind = {f["kind"]: f for f in found}
        assert by_kind["key"]["fingerprint"] == fingerprint(raw)
        assert by_kind["key"]["key"] == "svc/key" and by_kind["key"]["stage"] == "current"
        assert_not_leaked(result.output, raw, shape, where="scan output")
        table = run("scan", str(src))
        assert table.exit_code == 1 and "settings.py:1: key svc/key (current)" in table.stdout
        assert_not_leaked(table.output, raw, shape, where="scan table")


def test_a_clean_tree_exits_0(workdir: Path) -> None:
    assert run("put", "svc/key", input=canary()).exit_code == 0
    src = tree(workdir / "src", {"a.py": "x = 1\n", "b/c.txt": "nothing here\n"})
    result = run("scan", str(src))
    assert result.exit_code == 0, result.output
    assert "0 finding(s)" in result.stderr


def test_previous_and_pending_values_are_found_too(workdir: Path) -> None:
    old, staged = canary("old"), canary("staged")
    assert run("put", "svc/key", "--created-at", "100d", input=old).exit_code == 0
    assert run("rotate", "svc/key").exit_code == 0
    assert run("stage", "svc/key", input=staged).exit_code == 0
    src = tree(workdir / "src", {"a.env": f"OLD={old}\nNEXT={staged}\n"})
    found = json.loads(run("scan", str(src), "--format", "json").stdout)
    assert {(f["line"], f["stage"]) for f in found} == {(1, "previous"), (2, "pending")}
