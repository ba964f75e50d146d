"""The one place botocore's errors become keyvault's, for every AWS call keyvault makes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import botocore.exceptions as boto_errors
from botocore.config import Config as BotoConfig

from keyvault.errors import (
    AuthError,
    BackendUnavailableError,
    IntegrityError,
    KeyNotFoundError,
    KeyvaultError,
)

T = TypeVar("T")

#: adaptive mode adds client-side rate limiting that backs off when AWS throttles, which
#: keeps a sweep over many secrets inside the shared write quota (50/s)
BOTO_CONFIG = BotoConfig(
    retries={"mode": "adaptive", "max_attempts": 6}, connect_timeout=5, read_timeout=15
)

_AUTH_CODES = {
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
}
_UNAVAILABLE_CODES = {
    "ThrottlingException",
    "Throttling",
    "LimitExceededException",
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KMSInvalidStateException",
    "DisabledException",
}


#: what the one error boundary catches: botocore's errors and nothing else, so a bug of
#: ours (a KeyError, a TypeError) surfaces as itself instead of "AWS unavailable"
BOTO_ERRORS = (boto_errors.BotoCoreError, boto_errors.ClientError)


@dataclass(frozen=True, slots=True)
class Refused:
    """A ClientError whose code the caller named in ``refused=``: an answer, not a failure
    (ResourceExistsException is how a lost race looks; InvalidParameterException, a lost
    compare-and-set)."""

    code: str


def map_boto_error(exc: Exception, action: str, target: str) -> KeyvaultError:
    """The one place botocore errors become keyvault errors. Never keeps AWS's text."""
    if isinstance(exc, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError):
        return AuthError(f"no AWS credentials found for {action} (boto3's default chain)")
    if isinstance(
        exc,
        boto_errors.EndpointConnectionError
        | boto_errors.ConnectTimeoutError
        | boto_errors.ReadTimeoutError
        | boto_errors.ConnectionClosedError,
    ):
        return BackendUnavailableError(f"AWS endpoint unreachable during {action} {target}")
    if isinstance(exc, boto_errors.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _AUTH_CODES:
            return AuthError(f"AWS denied {action} on {target} ({code})")
        if code in ("ResourceNotFoundException", "NotFoundException"):
            return KeyNotFoundError(f"not found in AWS: {target}")
        if code == "InvalidRequestException" and "deleted" in str(exc).lower():
            return KeyNotFoundError(f"{target} is scheduled for deletion in AWS")
        if code in ("InvalidCiphertextException", "IncorrectKeyException"):
            return IntegrityError(f"KMS could not decrypt {target}: wrong key or tampered data")
        if code in _UNAVAILABLE_CODES:
            return BackendUnavailableError(f"AWS {action} on {target} failed ({code})")
        return BackendUnavailableError(f"AWS refused {action} on {target} ({code or 'error'})")
    return BackendUnavailableError(f"AWS {action} on {target} failed ({type(exc).__name__})")


def aws_call(action: str, target: str, func: Callable[[], T]) -> T:
    """KMS and other calls outside a provider: the same boundary, the same mapping."""
    try:
        return func()
    except BOTO_ERRORS as exc:
        raise map_boto_error(exc, action, target) from None


def code_of(exc: boto_errors.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
