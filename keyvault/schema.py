"""Config validation on msgspec: typed frozen structs, and errors that name table and field.

msgspec rather than pydantic because every ``keyvault`` command and every app's first
``kv.client()`` pays for the validator at import: pydantic's import and model building cost
about 40 ms of CPU here, msgspec's about 4 ms (``benchmarks/cold_start.py``). msgspec stops
at the first problem in a value and writes dict entries as ``[...]`` in its error paths, so
tables of named entries (``[providers.NAME]``, ``[keys."a/b"]``) are converted one entry at a
time here: each error names its table, and every broken table is reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from keyvault.durations import parse_duration
from keyvault.errors import InvalidKeyName
from keyvault.model import validate_name

T = TypeVar("T")


class Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A config table: unknown fields are errors (a typo must not silently do nothing)."""


class Duration(timedelta):
    """A duration written as people write them (``90d``, ``12h``); a timedelta in code.
    Its own type only so that msgspec hands its values to :func:`_decode`."""


class KeyName(str):
    """A key name, checked by :func:`keyvault.model.validate_name` on load."""

    __slots__ = ()


def _decode(kind: type, value: Any) -> Any:
    if kind is Duration:
        return Duration(seconds=parse_duration(value).total_seconds())
    if kind is Path:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a path (a non-empty string), got {value!r}")
        return Path(value)
    if kind is KeyName:
        if not isinstance(value, str):
            raise ValueError(f"expected a key name (a string), got {value!r}")
        try:
            return KeyName(validate_name(value))
        except InvalidKeyName as exc:
            raise ValueError(str(exc)) from None
    raise NotImplementedError(kind)


def convert(value: Any, kind: type[T]) -> T:
    """``value`` (parsed TOML) as ``kind``; raises :class:`msgspec.ValidationError`."""
    return msgspec.convert(value, kind, dec_hook=_decode)


class Problems:
    """Collects the config's errors so one load reports every broken table."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.lines: list[str] = []

    def add(self, table: str, message: str) -> None:
        """``table`` is ``[providers.local]`` (or empty for the top level); ``message``
        starts with the field (`` path: ...``) or a colon (``: ...``)."""
        line = f"{table}{message}" if table else message.lstrip(" :")
        self.lines.append(f"{self.where}: {line}")

    def convert(self, table: str, value: Any, kind: Callable[[Any], T]) -> T | None:
        """``kind(value)``, or None with the error recorded under ``table``."""
        try:
            return kind(value)
        except msgspec.ValidationError as exc:
            self.add(table, describe(exc))
        except ValueError as exc:
            self.add(table, f": {exc}")
        return None


def shown(text: str) -> str:
    """``text`` with anything unprintable escaped (names from the file go into messages)."""
    if text.isprintable():
        return text.replace('"', '\\"')
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def table_label(table: str, name: str) -> str:
    """``[providers.local]``, or ``[keys."a/b"]``; control characters in a name are shown
    escaped, so a config file cannot drive the terminal its errors are printed to."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return f"[{table}.{name}]"
    return f'[{table}."{shown(name)}"]'


_AT = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_FIELD_FIRST = re.compile(r"(?P<field>[a-z_]+): (?P<rest>.*)", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def describe(exc: msgspec.ValidationError) -> str:
    """msgspec's ``Expected `int` >= 1 - at `$.port``` as `` port: expected `int` >= 1``:
    the field path first (a space after the table it follows), then what is wrong."""
    text = str(exc)
    match = _AT.match(text)
    message, path = (match["message"], match["path"]) if match else (text, "")
    fields = [part for part in re.split(r"\.|\[(\d+|\.\.\.)\]", path) if part]
    unknown = _UNKNOWN.fullmatch(message)
    if unknown:
        fields.append(unknown["field"])
        message = "unknown field (check the spelling)"
    missing = _MISSING.fullmatch(message)
    if missing:
        fields.append(missing["field"])
        message = "required field is missing"
    named = _FIELD_FIRST.match(message)  # a check that names its field: "interval: ..."
    if named:
        fields.append(named["field"])
        message = named["rest"]
    if message.startswith("Invalid value") and fields and fields[-1] == "type":
        message = f"unknown type {message.removeprefix('Invalid value ')}"
    if message.startswith("Expected "):  # msgspec's type errors, in the style of ours
        message = "e" + message[1:]
    where = ".".join(shown(field) for field in fields)
    return f" {where}: {message}" if fields else f": {message}"


def named_tables(
    problems: Problems,
    data: Mapping[str, Any],
    tables: Mapping[str, Callable[[Any], Any]],
    *,
    key_named: frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """Convert each ``[table.NAME]`` entry on its own, so errors carry the entry's name.

    Tables in ``key_named`` are named by key names, which are checked as such."""
    converted: dict[str, dict[str, Any]] = {}
    for table, kind in tables.items():
        raw = data.get(table, {})
        if not isinstance(raw, dict):
            problems.add(f"{table}", ": expected a table")
            converted[table] = {}
            continue
        entries: dict[str, Any] = {}
        for name, body in raw.items():
            label = table_label(table, name)
            if table in key_named:
                try:
                    validate_name(name)
                except InvalidKeyName as exc:
                    problems.add(label, f" (the key name): {exc}")
                    continue
            value = problems.convert(label, body, kind)
            if value is not None:
                entries[name] = value
        converted[table] = entries
    return converted
