"""Optional extras: the distribution's name and the one message for a missing extra.

The import package and the command are ``keyvault``; the distribution on the package index
is ``keyvault-rotation`` (``keyvault`` there is another project), so every install hint
names it.
"""

from __future__ import annotations

from keyvault.errors import ConfigError

DISTRIBUTION = "keyvault-rotation"


def install_hint(extra: str) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def missing_extra(what: str, extra: str) -> ConfigError:
    """``what`` says what needs the extra, e.g. "[providers.bao] is a Vault provider, which"."""
    return ConfigError(f"{what} needs the '{extra}' extra: {install_hint(extra)}")
