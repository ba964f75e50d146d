"""Rotation's errors, in the one tree rooted at ``keyvault.KeyvaultError``.

::

    KeyvaultError
    ├── BackendUnavailableError
    │   └── IssuerError            exit 5  the issuer's API failed or is unreachable
    └── RotationCheckFailed        exit 1  a rotation could not proceed (a check failed)
        ├── VerificationFailed             the pending key failed its test
        └── NeedsStaging                   a manual key is due and nothing is staged
"""

from __future__ import annotations

from keyvault.errors import BackendUnavailableError, KeyvaultError


class IssuerError(BackendUnavailableError):
    """The issuer could not create, verify or revoke a key (unreachable, refused)."""


class RotationCheckFailed(KeyvaultError):
    exit_code = 1


class VerificationFailed(RotationCheckFailed):
    """The pending key did not pass its test; the current key is untouched."""


class NeedsStaging(RotationCheckFailed):
    """A key issued by a person is due, and no pending key has been staged."""
