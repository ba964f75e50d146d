"""``keyvault`` with every I/O point numbered, killed with SIGKILL at point N.

The chaos tests run this instead of the ``keyvault`` command. Every call into a provider
and an issuer is two points (before it and after it), and so is every HTTP call a backend's
SDK makes (boto3's event hooks, hvac's adapter), so a kill lands between any two writes a
rotation makes. ``KEYVAULT_CHAOS_KILL_AT=0`` only counts, writing the total to
``KEYVAULT_CHAOS_COUNT_FILE``. Nothing here is imported by keyvault itself.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from typing import Any

import keyvault.registry
import rotation.issuers
from rotation.cli import cli

KILL_AT = int(os.environ.get("KEYVAULT_CHAOS_KILL_AT", "0"))
COUNT_FILE = os.environ.get("KEYVAULT_CHAOS_COUNT_FILE")
PROVIDER_CALLS = frozenset(
    {
        "describe",
        "get_keyset",
        "get_pending",
        "list_keys",
        "claim",
        "release_claim",
        "stage",
        "promote",
        "retire",
        "discard_pending",
    }
)
ISSUER_CALLS = frozenset({"create", "verify", "revoke"})
_points = [0]


def point(*_: Any, **__: Any) -> None:
    _points[0] += 1
    if _points[0] == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


class Counted:
    def __init__(self, inner: Any, calls: frozenset[str]) -> None:
        self._inner = inner
        self._calls = calls

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr not in self._calls:
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            point()
            result = value(*args, **kwargs)
            point()
            return result

        counted.__wrapped__ = value  # type: ignore[attr-defined]  # signature: the real one
        return counted


def _count_sdk_calls(provider: Any) -> None:
    client = getattr(provider, "client", None)
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is not None:  # boto3
        events.register("before-call.*.*", point)
        events.register("after-call.*.*", point)
    adapter = getattr(client, "adapter", None)
    if adapter is not None and hasattr(adapter, "request"):  # hvac
        request = adapter.request

        def counted_request(*args: Any, **kwargs: Any) -> Any:
            point()
            response = request(*args, **kwargs)
            point()
            return response

        adapter.request = counted_request


_build_provider = keyvault.registry.build_provider
_build_issuer = rotation.issuers.build_issuer


def build_provider(*args: Any, **kwargs: Any) -> Any:
    provider = _build_provider(*args, **kwargs)
    _count_sdk_calls(provider)
    return Counted(provider, PROVIDER_CALLS)


def build_issuer(*args: Any, **kwargs: Any) -> Any:
    return Counted(_build_issuer(*args, **kwargs), ISSUER_CALLS)


def _write_count() -> None:
    if COUNT_FILE:
        with open(COUNT_FILE, "w") as handle:
            handle.write(str(_points[0]))


if __name__ == "__main__":
    keyvault.registry.build_provider = build_provider  # type: ignore[assignment]
    rotation.issuers.build_issuer = build_issuer  # type: ignore[assignment]
    atexit.register(_write_count)
    sys.exit(cli.main(args=sys.argv[1:], prog_name="keyvault", standalone_mode=True))
