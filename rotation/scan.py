"""``keyvault scan``: find hard-coded keys in files, by value and by shape.

Every current, previous and pending value keyvault holds is looked for as written; so are
well-known key shapes (Claude API keys, AWS access key ids, private keys...). A finding is
reported by file, line, and the key's name and fingerprint, or the shape's name and the
fingerprint of what matched: never the text itself. Files git ignores are skipped (through
git in a work tree, through the ``.gitignore`` files elsewhere), as are binary and very large
files. Exit 1 on a finding makes it a pre-commit hook and a CI gate.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pathspec

from keyvault.access import reading
from keyvault.errors import ConfigError, KeyvaultError
from keyvault.model import BrokenKey
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue, fingerprint

#: shorter values would match by chance; they are left out of the by-value search, and said so
MIN_VALUE_LENGTH = 8
MAX_FILE_BYTES = 5 * 1024 * 1024

SHAPES: dict[str, re.Pattern[str]] = {
    "anthropic-api-key": re.compile(r"sk-ant-[A-Za-z0-9_-]{20,}"),
    "aws-access-key-id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private-key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "vault-token": re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}"),
    "github-token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    path: str
    line: int
    kind: str  # "key" (a value keyvault holds) or a shape's name
    fingerprint: str
    key: str | None = None  # the keyvault key, for kind "key"
    stage: str | None = None


@dataclass(frozen=True, slots=True)
class Known:
    """A value keyvault holds, as the scan looks for it."""

    key: str
    stage: str
    value: SecretValue


def known_values(kv: KeyVault) -> tuple[list[Known], list[str]]:
    """Every current, previous and pending value of every key, and notes about what could
    not be searched for (unreadable providers, short values)."""
    found: list[Known] = []
    notes: list[str] = []
    for provider_name in kv.provider_names():
        try:
            provider = kv.provider(provider_name)
            listed = provider.list_keys()
        except KeyvaultError as exc:
            notes.append(f"provider {provider_name}: {exc}")
            continue
        for info in listed:
            if isinstance(info, BrokenKey):
                notes.append(f"key {info.name}: {info.error}")
                continue
            try:
                with reading("scan"):
                    keyset = provider.get_keyset(info.name)
                    pending = provider.get_pending(info.name)
            except KeyvaultError as exc:
                notes.append(f"key {info.name}: {exc}")
                continue
            versions = [("current", keyset.primary), ("previous", keyset.secondary)]
            versions.append(("pending", pending))
            for stage, version in versions:
                if version is None:
                    continue
                if len(version.secret.reveal()) < MIN_VALUE_LENGTH:
                    notes.append(
                        f"key {info.name} ({stage}, {version.fingerprint}) is shorter than "
                        f"{MIN_VALUE_LENGTH} characters: not searched for by value"
                    )
                    continue
                found.append(Known(info.name, stage, version.secret))
    return found, notes


def files_to_scan(paths: Sequence[Path]) -> Iterator[Path]:
    """The files under ``paths`` that git would track: ``git ls-files`` in a work tree,
    the ``.gitignore`` files (with pathspec) elsewhere."""
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path} does not exist")
        if path.is_file():
            yield path
            continue
        listed = _git_files(path)
        yield from listed if listed is not None else _walk(path)


def _git_files(root: Path) -> list[Path] | None:
    try:
        done = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            check=False,
        )
    except OSError:
        return None
    if done.returncode != 0:
        return None
    names = [name for name in done.stdout.decode("utf-8", "surrogateescape").split("\0") if name]
    return [root / name for name in names if (root / name).is_file()]


def _walk(root: Path) -> Iterator[Path]:
    specs: dict[Path, pathspec.GitIgnoreSpec | None] = {}
    for directory, folders, files in os.walk(root):
        here = Path(directory)
        folders[:] = [f for f in folders if f != ".git" and not _ignored(root, here / f, specs)]
        for name in files:
            if not _ignored(root, here / name, specs):
                yield here / name


def _ignored(root: Path, path: Path, specs: dict[Path, pathspec.GitIgnoreSpec | None]) -> bool:
    """Whether a ``.gitignore`` in ``root`` or a folder between it and ``path`` ignores it."""
    folder = root
    for part in path.relative_to(root).parts:
        if folder not in specs:
            ignore = folder / ".gitignore"
            specs[folder] = (
                pathspec.GitIgnoreSpec.from_lines(ignore.read_text(errors="replace").splitlines())
                if ignore.is_file()
                else None
            )
        spec = specs[folder]
        relative = path.relative_to(folder).as_posix() + ("/" if path.is_dir() else "")
        if spec is not None and spec.match_file(relative):
            return True
        folder = folder / part
    return False


def scan_text(path: str, text: str, known: Iterable[Known]) -> Iterator[Finding]:
    lines = text.splitlines()
    for item in known:
        raw = item.value.reveal()
        if raw not in text:
            continue
        for number, line in enumerate(lines, start=1):
            if raw in line:
                yield Finding(path, number, "key", item.value.fingerprint, item.key, item.stage)
    for number, line in enumerate(lines, start=1):
        for shape, pattern in SHAPES.items():
            for match in pattern.finditer(line):
                yield Finding(path, number, shape, fingerprint(match.group()))


def scan(kv: KeyVault, paths: Sequence[Path]) -> tuple[list[Finding], list[str]]:
    known, notes = known_values(kv)
    findings: list[Finding] = []
    for path in files_to_scan(paths):
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:8192]:
            continue  # binary
        text = data.decode("utf-8", "replace")
        in_file = list(scan_text(str(path), text, known))
        held = {f.fingerprint for f in in_file if f.kind == "key"}
        for finding in in_file:
            # a held value that also has a known shape is reported once, as the key it is
            if finding.kind != "key" and finding.fingerprint in held:
                continue
            findings.append(finding)
    return findings, notes
