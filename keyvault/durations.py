"""Durations as people write them in config: ``90d``, ``12h``, ``30m``, ``1d12h``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)([wdhms])")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
#: past this no policy means anything, and timedelta arithmetic starts to overflow
MAX_SECONDS = 100 * 366 * 86400


def parse_duration(text: str) -> timedelta:
    """Parse ``"90d"``-style text; raise ``ValueError`` with the accepted forms otherwise."""
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str):
        raise ValueError(f"expected a duration like '90d', '12h' or '30m', got {text!r}")
    compact = text.strip().lower()
    pos, seconds = 0, 0
    for match in _PART.finditer(compact):
        if match.start() != pos:
            break
        seconds += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not compact or pos != len(compact):
        raise ValueError(
            f"invalid duration {text!r}: write a number and a unit (w, d, h, m, s), "
            "e.g. '90d', '12h', '30m' or '1d12h'"
        )
    if seconds > MAX_SECONDS:
        raise ValueError(
            f"duration {text!r} is longer than 100 years; write a realistic duration, e.g. '90d'"
        )
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The inverse of :func:`parse_duration`, for messages."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit in "dhms":
        size = _UNITS[unit]
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)
