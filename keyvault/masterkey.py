"""Where the embedded store's master keys come from: an env var or a 0600 key file.

Both hold base64 of 32 random bytes; several keys (one per line in a file, comma-separated
in a variable) form a keyring whose first key encrypts — that is how ``rekey`` rotates the
master key without a moment where a value cannot be read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from keyvault.crypto import Keyring, MasterKey
from keyvault.errors import ConfigError

DEFAULT_MASTER_KEY_ENV = "KEYVAULT_MASTER_KEY"


def keyring_from_env(var: str, environ: Mapping[str, str] | None = None) -> Keyring:
    env = os.environ if environ is None else environ
    text = env.get(var)
    if not text:
        raise ConfigError(
            f"master key variable {var} is not set: set it to base64 of 32 random bytes "
            "(e.g. `openssl rand -base64 32`) or use master_key_file"
        )
    parts = [part for part in text.split(",") if part.strip()]
    return Keyring(MasterKey.from_base64(part, source=f"${var}") for part in parts)


def keyring_from_file(path: Path) -> Keyring:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"master key file {path} does not exist (run `keyvault init`, or point "
            "master_key_file at the right file)"
        ) from None
    if info.st_mode & 0o077:
        raise ConfigError(
            f"master key file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); refusing to use it: chmod 600 {path}"
        )
    try:
        lines = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"master key file {path} cannot be read: {type(exc).__name__}") from None
    if not lines:
        raise ConfigError(f"master key file {path} is empty")
    return Keyring(MasterKey.from_base64(line, source=str(path)) for line in lines)


def private_dir(path: Path) -> None:
    """Make ``path`` (and parents) if missing; a directory made here is 0700 whatever the
    umask."""
    if path.exists():
        return
    path.mkdir(mode=0o700, parents=True)
    path.chmod(0o700)


def write_key_file(path: Path, keys: Sequence[MasterKey], *, overwrite: bool = False) -> None:
    """Write keys (first = primary) to a 0600 file, atomically when replacing one."""
    write_private_lines(path, [key.to_base64() for key in keys], overwrite=overwrite)


def write_private_lines(path: Path, lines: Sequence[str], *, overwrite: bool = False) -> None:
    """A 0600 file of lines: created exclusively, or replaced atomically (write, fsync,
    rename) so a crash leaves the old file or the new one, never half of either."""
    body = "".join(line + "\n" for line in lines).encode("ascii")
    private_dir(path.parent)
    if not overwrite:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        return
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
