"""Random key material for the ``generated`` issuer and ``keyvault put --generate``."""

from __future__ import annotations

import secrets
import string

URLSAFE_ALPHABET = string.ascii_letters + string.digits + "-_"


def generate_token(length: int = 48, *, alphabet: str = URLSAFE_ALPHABET, prefix: str = "") -> str:
    """``length`` characters drawn uniformly from ``alphabet`` with ``secrets``."""
    if length < 16:
        raise ValueError("generated keys need at least 16 characters")
    if len(set(alphabet)) < 16:
        raise ValueError("the alphabet needs at least 16 distinct characters")
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))
