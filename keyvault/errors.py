"""One error tree for the whole project, mapped once at each backend boundary.

::

    KeyvaultError                 exit 1
    ├── ConfigError               exit 2  broken config file, bad key name, bad usage
    │   ├── InvalidKeyName
    │   └── InvalidKeyValue       a value with control characters, blank or too large
    ├── KeyExistsError            exit 2  `put` on a key that exists (use `rotate`)
    ├── ReadOnlyError             exit 2  a write to a backend that cannot write (env)
    ├── KeyNotFoundError          exit 3
    ├── AuthError                 exit 4  wrong token, permission denied
    │   └── EnvironmentMismatch         a prod key in a dev process, or the reverse
    ├── BackendUnavailableError   exit 5  unreachable, sealed, throttled past retries
    │   ├── CircuitOpenError              the client's breaker refuses calls to an upstream
    │   └── QueueFullError                a key's queue of waiting requests is full
    │       └── QueueTimeoutError         a request waited longer than queue_timeout
    ├── IntegrityError            exit 6  tampered ciphertext, wrong master key
    └── ConflictError             exit 7  compare-and-set lost: someone else wrote first

Messages never carry a secret value: backends build them from names, versions, paths and
fingerprints only, and wrap the SDK exception with ``raise ... from None`` where the SDK's
own text could hold response bodies.
"""

from __future__ import annotations


class KeyvaultError(Exception):
    """Base of every error keyvault raises on purpose."""

    exit_code: int = 1


class ConfigError(KeyvaultError):
    """The configuration or the command line is wrong; nothing was changed."""

    exit_code = 2


class InvalidKeyName(ConfigError):
    """A key name outside ``[a-z0-9][a-z0-9._/-]*`` (at most 128 characters)."""


class InvalidKeyValue(ConfigError):
    """A value that cannot be a key: blank, too large, or with control characters that
    would split an HTTP header. The message never quotes the value."""


class KeyExistsError(KeyvaultError):
    exit_code = 2


class ReadOnlyError(KeyvaultError):
    exit_code = 2


class KeyNotFoundError(KeyvaultError):
    exit_code = 3


class AuthError(KeyvaultError):
    """Authentication failed or the credential lacks permission."""

    exit_code = 4


class EnvironmentMismatch(AuthError):
    """The key's environment label differs from the process's environment."""


class BackendUnavailableError(KeyvaultError):
    exit_code = 5


class CircuitOpenError(BackendUnavailableError):
    """The client's circuit breaker is open: the upstream failed repeatedly; calls are
    refused without being sent until the cooldown has passed."""


class QueueFullError(BackendUnavailableError):
    """Every slot of the key's ``max_in_flight`` is taken and ``max_queue`` callers already
    wait: refused at once, so an overloaded app sheds load instead of piling it up."""


class QueueTimeoutError(QueueFullError):
    """The request waited ``queue_timeout`` for a slot of its key and was not sent."""


class IntegrityError(KeyvaultError):
    """Stored data failed authentication. Deliberately opaque, like Fernet's InvalidToken."""

    exit_code = 6


class ConflictError(KeyvaultError):
    """A compare-and-set write lost against a concurrent writer; re-read and decide again."""

    exit_code = 7


EXIT_CODES: dict[int, str] = {
    0: "ok",
    1: "a check failed (audit --fail-on) or an unexpected error",
    2: "usage or configuration error",
    3: "key not found",
    4: "authentication or permission denied",
    5: "backend unavailable",
    6: "integrity failure (tampered store or wrong master key)",
    7: "conflict: a concurrent writer changed the key first",
}
