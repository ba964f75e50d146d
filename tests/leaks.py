"""Canary values and a leak check whose failure message never holds the canary.

Kept out of test modules on purpose: pytest rewrites asserts in test files and conftest,
and a rewritten ``assert canary not in text`` would print the canary on failure.
"""

from __future__ import annotations

import secrets

from keyvault.secret import fingerprint


def canary(label: str = "key") -> str:
    """A unique, recognisable value that must never appear in any output."""
    return f"canary-{label}-{secrets.token_hex(16)}"


def assert_not_leaked(text: str, *canaries: str, where: str = "output") -> None:
    for value in canaries:
        if value in text:
            raise AssertionError(f"canary {fingerprint(value)} leaked into {where}")
