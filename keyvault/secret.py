"""The only place a raw key value lives.

``SecretValue`` shows a fingerprint in ``repr``/``str``/f-strings, refuses pickling and
copying into other processes, and gives up its value only through :meth:`reveal`, so a
value that ends up in a log line, an exception or a report is visibly a bug at the call
site that revealed it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, NoReturn

_FINGERPRINT_DOMAIN = b"keyvault-fingerprint-v1\x00"


def fingerprint(value: str) -> str:
    """A short, stable, safe-to-print digest of a key value.

    Domain-separated SHA-256, so it never equals a plain hash someone may have published
    for the same key; 16 hex digits (64 bits) tell keys apart without helping a guesser.
    """
    digest = hashlib.sha256(_FINGERPRINT_DOMAIN + value.encode("utf-8")).hexdigest()
    return f"fp:{digest[:16]}"


class SecretValue:
    """A key value that does not leak by accident."""

    __slots__ = ("_fingerprint", "_value")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("SecretValue holds text; decode bytes first")
        if not value:
            raise ValueError("a key value cannot be empty")
        self._value = value
        self._fingerprint = fingerprint(value)

    def reveal(self) -> str:
        """The raw value. Call it at the last moment, at the edge that must send it."""
        return self._value

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def __repr__(self) -> str:
        return f"SecretValue({self._fingerprint})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretValue):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("SecretValue cannot be pickled: secret values never leave the process")

    def __copy__(self) -> SecretValue:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretValue:
        return self
