"""AWS Secrets Manager backend (``boto3``), and KMS keys as server-rotated keys.

Stages are Secrets Manager's own staging labels: ``AWSCURRENT`` is the primary,
``AWSPREVIOUS`` the secondary, ``AWSPENDING`` the pending version, and our version ids are
its VersionIds. Secrets Manager is the compare-and-set engine:

- **stage** is ``PutSecretValue`` with ``AWSPENDING`` and a ``ClientRequestToken`` derived
  from the caller's request token, so a retried stage finds its version instead of making a
  second one (the token *is* the VersionId);
- **promote** is ``UpdateSecretVersionStage`` moving ``AWSCURRENT`` with
  ``RemoveFromVersionId`` set to the version the caller read: if someone moved it first,
  AWS refuses (``InvalidParameterException``) and we raise ConflictError. AWS moves
  ``AWSPREVIOUS`` itself; we clear ``AWSPENDING`` from the new current, which AWS leaves.

What an audit needs and ``ListSecrets`` does not carry (the current version's creation time
and fingerprint, the environment, the last rotation) is kept in tags written after each
step, each naming the VersionId it describes; a listing is then ``ListSecrets`` pages and
nothing else. A tag that names a version that no longer holds that label (a writer died
between its two calls, or someone rotated outside keyvault) sends that one secret to
``ListSecretVersionIds``, which has the true creation times.

Every botocore exception is mapped once, in :meth:`AwsProvider._call`.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

import botocore.exceptions as boto_errors
from botocore.config import Config as BotoConfig

from keyvault.crypto import Keyring, MasterKey
from keyvault.errors import (
    AuthError,
    BackendUnavailableError,
    ConfigError,
    ConflictError,
    IntegrityError,
    KeyExistsError,
    KeyNotFoundError,
    KeyvaultError,
)
from keyvault.model import (
    Claim,
    KeyInfo,
    KeySet,
    KeyVersion,
    ServerKeyInfo,
    ServerKeyKind,
    VersionInfo,
    key_path,
    utcnow,
)
from keyvault.providers.base import (
    KeyProvider,
    ServerRotatedKeys,
    check_replace,
    claim_decision,
    expect_no_previous,
    expect_version,
)
from keyvault.secret import SecretValue

T = TypeVar("T")
log = logging.getLogger("keyvault.aws")

CURRENT, PREVIOUS, PENDING = "AWSCURRENT", "AWSPREVIOUS", "AWSPENDING"
MANAGED_TAG = "keyvault:managed"
TAG = "keyvault:"
_TOKEN_NAMESPACE = uuid.UUID("5b0c53a4-7a5e-4c1b-9f3e-6a8f4e1d2c30")

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


def _aws_call(action: str, target: str, func: Callable[[], T]) -> T:
    """KMS and other calls outside a provider: the same boundary, the same mapping."""
    try:
        return func()
    except BOTO_ERRORS as exc:
        raise map_boto_error(exc, action, target) from None


def _code(exc: boto_errors.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class AwsProvider(KeyProvider, ServerRotatedKeys):
    def __init__(
        self,
        name: str,
        client: Any,
        *,
        kms_client: Any = None,
        prefix: str = "keyvault/",
        kms_key_id: str | None = None,
        value_field: str | None = None,
        kms_keys: Sequence[str] = (),
        recovery_window_days: int = 7,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.name = name
        self.client = client
        self.kms = kms_client
        self.prefix = prefix
        self.kms_key_id = kms_key_id
        self.value_field = value_field
        self.kms_keys = tuple(kms_keys)
        self.recovery_window_days = recovery_window_days
        self._clock = clock

    # -- names, values, tags ---------------------------------------------------------------

    def _secret_id(self, name: str) -> str:
        return key_path(self.prefix, name)

    def _key_name(self, secret_name: str) -> str:
        return secret_name[len(self.prefix) :]

    @overload
    def _call(self, action: str, name: str, func: Callable[[], T]) -> T: ...

    @overload
    def _call(
        self, action: str, name: str, func: Callable[[], T], *, refused: tuple[str, ...]
    ) -> T | Refused: ...

    def _call(
        self, action: str, name: str, func: Callable[[], T], *, refused: tuple[str, ...] = ()
    ) -> T | Refused:
        """The provider's one error boundary. ``refused`` names the ClientError codes the
        caller treats as answers: they come back as :class:`Refused` instead of raising."""
        try:
            return func()
        except BOTO_ERRORS as exc:
            if isinstance(exc, boto_errors.ClientError) and _code(exc) in refused:
                return Refused(_code(exc))
            mapped = map_boto_error(exc, action, f"secret {self.prefix}{name}")
            if isinstance(mapped, KeyNotFoundError):
                mapped = KeyNotFoundError(f"key {name!r} not found in provider {self.name!r}")
            raise mapped from None

    def _value_of(self, name: str, secret_string: str | None) -> SecretValue:
        if secret_string is None:
            raise KeyNotFoundError(f"key {name!r} in provider {self.name!r} has no text value")
        if self.value_field is None:
            return SecretValue(secret_string)
        try:
            document = json.loads(secret_string)
            return SecretValue(str(document[self.value_field]))
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"secret {self._secret_id(name)} is not a JSON object with the field "
                f"{self.value_field!r} (value_field)"
            ) from None

    def _string_for(self, name: str, value: SecretValue) -> str:
        """The SecretString to write: the value, or the current JSON with the field replaced."""
        if self.value_field is None:
            return value.reveal()
        current = self._call(
            "GetSecretValue",
            name,
            lambda: self.client.get_secret_value(SecretId=self._secret_id(name)),
            refused=("ResourceNotFoundException",),  # no value yet: a document of one field
        )
        document: Any = {}
        if not isinstance(current, Refused):
            try:
                document = json.loads(current.get("SecretString") or "{}")
            except ValueError:
                document = None
        if not isinstance(document, dict):
            # writing {value_field: ...} alone would drop the secret's other fields
            raise ConfigError(
                f"secret {self._secret_id(name)} is not a JSON object, so its {self.value_field!r} "
                "field cannot be replaced without losing the rest (value_field)"
            )
        document[self.value_field] = value.reveal()
        return json.dumps(document)

    def _describe_raw(self, name: str) -> dict[str, Any]:
        return dict(
            self._call(
                "DescribeSecret",
                name,
                lambda: self.client.describe_secret(SecretId=self._secret_id(name)),
            )
        )

    def _versions(self, name: str) -> dict[str, dict[str, Any]]:
        """Every version with its true creation time (ListSecretVersionIds is not pageable
        through a botocore paginator, so follow NextToken by hand)."""
        versions: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"SecretId": self._secret_id(name), "IncludeDeprecated": True}
        while True:
            page = self._call(
                "ListSecretVersionIds",
                name,
                lambda: self.client.list_secret_version_ids(**kwargs),
            )
            for version in page.get("Versions", []):
                versions[version["VersionId"]] = version
            if not page.get("NextToken"):
                return versions
            kwargs["NextToken"] = page["NextToken"]

    def _tag(self, name: str, tags: Mapping[str, str]) -> None:
        self._call(
            "TagResource",
            name,
            lambda: self.client.tag_resource(
                SecretId=self._secret_id(name),
                Tags=[{"Key": key, "Value": value} for key, value in tags.items()],
            ),
        )

    def _untag(self, name: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self._call(
                "UntagResource",
                name,
                lambda: self.client.untag_resource(SecretId=self._secret_id(name), TagKeys=keys),
            )

    # -- reading ---------------------------------------------------------------------------

    def _get_stage(self, name: str, stage: str) -> dict[str, Any] | None:
        """The version under ``stage``; None when a secondary or pending stage is empty."""
        response = self._call(
            "GetSecretValue",
            name,
            lambda: self.client.get_secret_value(
                SecretId=self._secret_id(name), VersionStage=stage
            ),
            refused=() if stage == CURRENT else ("ResourceNotFoundException",),
        )
        return None if isinstance(response, Refused) else dict(response)

    def get_keyset(self, name: str) -> KeySet:
        """Needs only ``GetSecretValue`` (what the app policy grants); ``DescribeSecret``,
        when allowed, adds the managed-tag check, the environment label and exact times."""
        try:
            tags: dict[str, str] = _tags(self._describe_raw(name))
        except AuthError:
            tags = {}
        else:
            if tags.get(MANAGED_TAG) != "true":
                raise KeyNotFoundError(
                    f"secret {self._secret_id(name)} is not managed by keyvault "
                    f"(no {MANAGED_TAG}=true tag); leaving it alone"
                )
        current = self._get_stage(name, CURRENT)
        previous = self._get_stage(name, PREVIOUS)
        if current is None:
            raise KeyNotFoundError(f"key {name!r} in provider {self.name!r} has no value yet")
        return KeySet(
            name,
            self._key_version(name, current, tags),
            None if previous is None else self._key_version(name, previous, tags),
            tags.get(TAG + "environment"),
        )

    def _key_version(
        self, name: str, response: Mapping[str, Any], tags: Mapping[str, str]
    ) -> KeyVersion:
        version = response["VersionId"]
        value = self._value_of(name, response.get("SecretString"))
        return KeyVersion(
            version,
            value,
            _tagged_created_at(tags, version) or _aware(response.get("CreatedDate")),
            _ref_of(tags, value.fingerprint),
        )

    def get_pending(self, name: str) -> KeyVersion | None:
        info = self.describe(name)
        if info.pending is None:
            return None
        return KeyVersion(
            info.pending.version,
            self._read_version(name, info.pending.version),
            info.pending.created_at,
            info.pending.ref,
        )

    def _read_version(self, name: str, version: str) -> SecretValue:
        response = self._call(
            "GetSecretValue",
            name,
            lambda: self.client.get_secret_value(SecretId=self._secret_id(name), VersionId=version),
        )
        return self._value_of(name, response.get("SecretString"))

    def describe(self, name: str) -> KeyInfo:
        described = self._describe_raw(name)
        if _tags(described).get(MANAGED_TAG) != "true":
            raise KeyNotFoundError(
                f"secret {self._secret_id(name)} is not managed by keyvault "
                f"(no {MANAGED_TAG}=true tag); leaving it alone"
            )
        return self._info(name, described, self._versions(name))

    def _info(
        self,
        name: str,
        entry: Mapping[str, Any],
        versions: Mapping[str, Mapping[str, Any]] | None,
    ) -> KeyInfo:
        """KeyInfo from a ListSecrets/DescribeSecret entry; ``versions`` (from
        ListSecretVersionIds) fills in creation times the tags do not vouch for."""
        tags = _tags(entry)
        stages = entry.get("SecretVersionsToStages") or entry.get("VersionIdsToStages") or {}
        by_label = _labels(stages)

        def version_info(label: str) -> VersionInfo | None:
            version = by_label.get(label)
            if version is None:
                return None
            fingerprint = _tagged(tags, version, "fingerprint")
            created = _tagged_created_at(tags, version)
            if created is None and versions is not None and version in versions:
                created = _aware(versions[version].get("CreatedDate"))
            return VersionInfo(version, fingerprint, created, _ref_of(tags, fingerprint))

        current = version_info(CURRENT)
        if current is None:
            raise KeyNotFoundError(f"key {name!r} in provider {self.name!r} has no current version")
        pending = version_info(PENDING)
        problem = None
        if pending is not None and pending.version not in (
            tags.get(TAG + "pending-version"),
            tags.get(STAGING_TAG),
        ):
            problem = (
                f"pending version {pending.version} was not staged by keyvault (another tool "
                f"set AWSPENDING); it is never tested or promoted: `keyvault discard {name}` "
                "drops it"
            )
        return KeyInfo(
            name=name,
            provider=self.name,
            current=current,
            previous=version_info(PREVIOUS),
            pending=pending,
            environment=tags.get(TAG + "environment"),
            promoted_at=_promoted_at(tags, current.version),
            problem=problem,
        )

    def list_keys(self) -> list[KeyInfo]:
        paginator = self.client.get_paginator("list_secrets")
        filters = [
            {"Key": "tag-key", "Values": [MANAGED_TAG]},
            {"Key": "name", "Values": [self.prefix]},
        ]
        pages = self._call(
            "ListSecrets",
            "*",
            lambda: list(paginator.paginate(Filters=filters, PaginationConfig={"PageSize": 100})),
        )
        infos: list[KeyInfo] = []
        for page in pages:
            for entry in page.get("SecretList", []):
                secret_name = entry["Name"]
                if not secret_name.startswith(self.prefix):
                    continue
                if _tags(entry).get(MANAGED_TAG) != "true":
                    continue
                name = self._key_name(secret_name)
                if CURRENT not in _labels(entry.get("SecretVersionsToStages") or {}):
                    log.info("secret %s is provisioned but has no value yet", secret_name)
                    continue
                info = self._info(name, entry, None)
                if not _tags_vouch_for(info):
                    info = self._info(name, entry, self._versions(name))
                infos.append(info)
        return sorted(infos, key=lambda info: info.name)

    def get_primaries(self, names: Sequence[str]) -> dict[str, KeyVersion]:
        """Primary values of many keys in ``BatchGetSecretValue`` calls of 20."""
        result: dict[str, KeyVersion] = {}
        for start in range(0, len(names), 20):
            chunk = list(names[start : start + 20])
            ids = [self._secret_id(name) for name in chunk]
            response = self._call(
                "BatchGetSecretValue",
                chunk[0] if chunk else "*",
                lambda ids=ids: self.client.batch_get_secret_value(SecretIdList=ids),  # type: ignore[misc]
            )
            for item in response.get("SecretValues", []):
                name = self._key_name(item["Name"])
                result[name] = KeyVersion(
                    item["VersionId"],
                    self._value_of(name, item.get("SecretString")),
                    _aware(item.get("CreatedDate")),
                )
            for error in response.get("Errors", []):
                name = self._key_name(str(error.get("SecretId", "")))
                raise map_boto_error(
                    boto_errors.ClientError(
                        {"Error": {"Code": error.get("ErrorCode", "")}}, "BatchGetSecretValue"
                    ),
                    "BatchGetSecretValue",
                    f"secret {self._secret_id(name)}",
                )
        return result

    # -- writing ---------------------------------------------------------------------------

    def create(
        self,
        name: str,
        value: SecretValue,
        *,
        environment: str | None = None,
        created_at: datetime | None = None,
        ref: str | None = None,
    ) -> KeyInfo:
        version = str(uuid.uuid4())
        when = created_at or self._clock()
        tags = {MANAGED_TAG: "true", **_version_tags("current", version, value, when)}
        if ref is not None:
            tags[_ref_tag(value.fingerprint)] = ref
        if environment is not None:
            tags[TAG + "environment"] = environment
        kwargs: dict[str, Any] = {
            "Name": self._secret_id(name),
            "SecretString": value.reveal()
            if self.value_field is None
            else json.dumps({self.value_field: value.reveal()}),
            "ClientRequestToken": version,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        if self.kms_key_id is not None:
            kwargs["KmsKeyId"] = self.kms_key_id
        created = self._call(
            "CreateSecret",
            name,
            lambda: self.client.create_secret(**kwargs),
            refused=("ResourceExistsException",),
        )
        if isinstance(created, Refused):
            return self._fill_provisioned(name, value, tags, version)
        return self.describe(name)

    def _fill_provisioned(
        self, name: str, value: SecretValue, tags: Mapping[str, str], version: str
    ) -> KeyInfo:
        """A managed secret with no value yet (Terraform provisions them empty) gets its first
        value; anything else that exists is refused."""
        described = self._describe_raw(name)
        existing = _tags(described)
        if existing.get(MANAGED_TAG) == "true" and not _labels(
            described.get("VersionIdsToStages") or {}
        ).get(CURRENT):
            self._call(
                "PutSecretValue",
                name,
                lambda: self.client.put_secret_value(
                    SecretId=self._secret_id(name),
                    SecretString=self._string_for(name, value),
                    VersionStages=[CURRENT],
                    ClientRequestToken=version,
                ),
            )
            own = {k: v for k, v in tags.items() if k != TAG + "environment" or k not in existing}
            self._tag(name, own)
            return self.describe(name)
        raise KeyExistsError(
            f"key {name!r} already exists in provider {self.name!r}; "
            "use `keyvault rotate` to replace its value"
        )

    def _request_version(self, name: str, request_token: str | None) -> str:
        if request_token is None:
            return str(uuid.uuid4())
        return str(uuid.uuid5(_TOKEN_NAMESPACE, f"{self._secret_id(name)}\x00{request_token}"))

    def stage(
        self,
        name: str,
        value: SecretValue,
        *,
        request_token: str | None = None,
        ref: str | None = None,
        replace: str | None = None,
    ) -> KeyInfo:
        info = self.describe(name)
        version = self._request_version(name, request_token)
        pending = info.pending
        if request_token is not None and pending is not None and pending.version == version:
            if pending.fingerprint is not None:
                return info  # this stage already happened: a retry after a crash
            # the put landed but the process died before tagging: finish, if it is ours
            if self._read_version(name, version).fingerprint != value.fingerprint:
                raise ConflictError(f"key {name!r}: another runner staged version {version} first")
            self._tag(name, _version_tags("pending", version, value, self._clock()))
            return self.describe(name)
        known = {v.version for v in (info.current, info.previous) if v is not None}
        if request_token is not None and version in known:
            return info  # staged and promoted since
        if request_token is not None and version in self._versions(name):
            return info  # staged, then promoted and retired since
        replaced = info.pending
        check_replace(name, replaced.version if replaced else None, replace)
        secret_string = self._string_for(name, value)
        # before the put: a version under AWSPENDING that no keyvault stage announced is
        # another tool's. Every racer announces the same id (it derives from the token);
        # refs are keyed by the value's fingerprint, so no other writer's tag is clobbered.
        intent = {STAGING_TAG: version}
        if ref is not None:
            intent[_ref_tag(value.fingerprint)] = ref
        self._tag(name, intent)
        # the same token with another value: a concurrent runner staged first
        lost = not self._put_version(name, secret_string, version, PENDING)
        # the token decides who owns the version: only its owner may describe it in tags
        if lost or self._read_version(name, version).fingerprint != value.fingerprint:
            if ref is not None:
                self._untag(name, [_ref_tag(value.fingerprint)])
            raise ConflictError(f"key {name!r}: another runner staged version {version} first")
        # PutSecretValue moved AWSPENDING off a replaced version in the same call
        self._tag(name, _version_tags("pending", version, value, self._clock()))
        if replaced is not None and replaced.fingerprint != value.fingerprint:
            self._untag(name, _ref_tags(replaced.fingerprint))
        if request_token is not None:
            self._end_claim(name, request_token)  # the claimed rotation has staged its key
        return self.describe(name)

    def _claim_version(self, name: str, token: str) -> str:
        return str(uuid.uuid5(_TOKEN_NAMESPACE, f"{self._secret_id(name)}\x00claim\x00{token}"))

    def claim(
        self,
        name: str,
        *,
        token: str,
        owner: str,
        expected_current: str,
        lease: timedelta,
    ) -> tuple[bool, Claim | None]:
        """A claim is a version under the custom label KEYVAULTCLAIM whose id derives from
        the token: every runner of one rotation writes the same id, and AWS lets only the
        first body through (``ResourceExistsException``) — a compare-and-set that needs no
        tag. It holds no secret and never becomes current."""
        info = self.describe(name)
        if info.current.version != expected_current or info.pending is not None:
            return False, None
        body = json.dumps({"keyvault_claim": token, "owner": owner})
        if self._put_version(name, body, self._claim_version(name, token), CLAIM_LABEL):
            return True, None
        holder = self._claim_holder(name, token)
        if holder is None:  # ended by its owner between the two calls: it staged, stand down
            return False, None
        now = max(filter(None, (self._clock(), self.backend_time_or_none())))
        return claim_decision(holder, token=token, owner=owner, now=now, lease=lease)

    def release_claim(self, name: str, *, token: str, owner: str) -> None:
        holder = self._claim_holder(name, token)
        if holder is not None and holder.owner == owner:
            self._end_claim(name, token)

    def _put_version(self, name: str, secret_string: str, version: str, label: str) -> bool:
        """PutSecretValue with a caller-chosen version id: False when that id already holds
        another body (``ResourceExistsException``), which is how a lost race looks."""
        put = self._call(
            "PutSecretValue",
            name,
            lambda: self.client.put_secret_value(
                SecretId=self._secret_id(name),
                SecretString=secret_string,
                ClientRequestToken=version,
                VersionStages=[label],
            ),
            refused=("ResourceExistsException",),
        )
        return not isinstance(put, Refused)

    def _claim_holder(self, name: str, token: str) -> Claim | None:
        """Who holds the claim for ``token``, since when (AWS's own CreatedDate)."""
        version = self._claim_version(name, token)
        existing = self._call(
            "GetSecretValue",
            name,
            lambda: self.client.get_secret_value(SecretId=self._secret_id(name), VersionId=version),
            refused=("ResourceNotFoundException",),
        )
        if isinstance(existing, Refused):
            return None
        try:
            holder = str(json.loads(existing.get("SecretString") or "{}").get("owner", ""))
        except (ValueError, AttributeError):
            holder = ""
        return Claim(token, holder, _aware(existing.get("CreatedDate")))

    def _end_claim(self, name: str, token: str) -> None:
        # the label may have moved on (a newer claim) or be gone: then nothing is left to end
        with contextlib.suppress(KeyvaultError):
            self._remove_label(name, CLAIM_LABEL, self._claim_version(name, token))

    def promote(self, name: str, *, pending_version: str, expected_current: str) -> KeyInfo:
        info = self.describe(name)
        expect_version(
            name, "pending", info.pending.version if info.pending else None, pending_version
        )
        expect_version(name, "current", info.current.version, expected_current)
        expect_no_previous(name, info.previous.version if info.previous else None)
        assert info.pending is not None
        # before the label moves: a crash between the move and the tags below still leaves
        # when (at the latest) the promotion happened, so a resume never shortens the grace
        stamp = max(filter(None, (self._clock(), self.backend_time_or_none())))
        self._tag(name, {PROMOTING_TAG: f"{pending_version} {_iso(stamp)}"})
        moved = self._call(  # the read above is advisory; this call is the compare-and-set
            "UpdateSecretVersionStage",
            name,
            lambda: self.client.update_secret_version_stage(
                SecretId=self._secret_id(name),
                VersionStage=CURRENT,
                MoveToVersionId=pending_version,
                RemoveFromVersionId=expected_current,
            ),
            refused=("InvalidParameterException",),
        )
        if isinstance(moved, Refused):
            raise ConflictError(
                f"key {name!r}: AWSCURRENT is no longer on version {expected_current}; "
                "another writer promoted first"
            )
        self._call(
            "UpdateSecretVersionStage",
            name,
            lambda: self.client.update_secret_version_stage(
                SecretId=self._secret_id(name),
                VersionStage=PENDING,
                RemoveFromVersionId=pending_version,
            ),
        )
        old, new = info.current, info.pending
        if new.fingerprint is None:  # staged outside keyvault: learn it once, then tag
            new = VersionInfo(
                new.version,
                self._read_version(name, new.version).fingerprint,
                new.created_at,
                new.ref,
            )
        tags = {
            **_info_tags("current", new),
            **_info_tags("previous", old),
            TAG + "promoted-at": _iso(stamp),
            TAG + "promoted-version": new.version,
        }
        stale = [
            key
            for key in (*_stage_tag_keys("current"), *_stage_tag_keys("previous"))
            if key not in tags
        ]
        self._tag(name, tags)  # first: a crash before the untag leaves the truth findable
        self._untag(name, [*_stage_tag_keys("pending"), *stale, STAGING_TAG, PROMOTING_TAG])
        return self.describe(name)

    def backend_time(self) -> datetime | None:
        """The ``Date`` header of a one-item ListSecrets (AWS's clock, to the second)."""
        response = self._call("ListSecrets", "*", lambda: self.client.list_secrets(MaxResults=1))
        date = (response.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
        if not date:
            return None
        try:
            return email.utils.parsedate_to_datetime(date).astimezone(UTC)
        except (TypeError, ValueError):
            return None

    def retire(self, name: str, *, expected_previous: str) -> KeyInfo:
        info = self.describe(name)
        if info.previous is None:
            return info
        expect_version(name, "previous", info.previous.version, expected_previous)
        self._remove_label(name, PREVIOUS, expected_previous)
        self._untag(name, [*_stage_tag_keys("previous"), *_ref_tags(info.previous.fingerprint)])
        return self.describe(name)

    def discard_pending(self, name: str, *, pending_version: str) -> KeyInfo:
        info = self.describe(name)
        if info.pending is None:
            return info
        expect_version(name, "pending", info.pending.version, pending_version)
        self._remove_label(name, PENDING, pending_version)
        self._untag(
            name, [*_stage_tag_keys("pending"), *_ref_tags(info.pending.fingerprint), STAGING_TAG]
        )
        return self.describe(name)

    def _remove_label(self, name: str, label: str, version: str) -> None:
        removed = self._call(
            "UpdateSecretVersionStage",
            name,
            lambda: self.client.update_secret_version_stage(
                SecretId=self._secret_id(name), VersionStage=label, RemoveFromVersionId=version
            ),
            refused=("InvalidParameterException",),
        )
        if isinstance(removed, Refused):
            raise ConflictError(f"key {name!r}: {label} moved concurrently")

    def delete(self, name: str) -> None:
        self.describe(name)
        kwargs: dict[str, Any] = {"SecretId": self._secret_id(name)}
        if self.recovery_window_days == 0:
            kwargs["ForceDeleteWithoutRecovery"] = True
        else:
            kwargs["RecoveryWindowInDays"] = self.recovery_window_days
        self._call("DeleteSecret", name, lambda: self.client.delete_secret(**kwargs))

    # -- KMS: server-rotated keys ----------------------------------------------------------

    def _kms(self) -> Any:
        if self.kms is None:
            raise ConfigError(f"provider {self.name!r} has no KMS client (kms_keys needs one)")
        return self.kms

    def _kms_info(self, key_id: str) -> ServerKeyInfo:
        kms = self._kms()
        target = f"KMS key {key_id}"
        meta = _aws_call("DescribeKey", target, lambda: kms.describe_key(KeyId=key_id))[
            "KeyMetadata"
        ]
        status = _aws_call(
            "GetKeyRotationStatus", target, lambda: kms.get_key_rotation_status(KeyId=key_id)
        )
        rotations: list[dict[str, Any]] = []
        paginator = kms.get_paginator("list_key_rotations")
        for page in _aws_call(
            "ListKeyRotations", target, lambda: list(paginator.paginate(KeyId=key_id))
        ):
            rotations.extend(page.get("Rotations", []))
        return kms_key_info(self.name, key_id, meta, status, rotations)

    def list_server_keys(self) -> list[ServerKeyInfo]:
        return [self._kms_info(key_id) for key_id in self.kms_keys]

    def rotate_server_key(self, name: str) -> ServerKeyInfo:
        kms = self._kms()
        _aws_call(
            "RotateKeyOnDemand", f"KMS key {name}", lambda: kms.rotate_key_on_demand(KeyId=name)
        )
        return self._kms_info(name)


# -- plain functions over AWS shapes -------------------------------------------------------------


def kms_key_info(
    provider: str,
    key_id: str,
    metadata: Mapping[str, Any],
    rotation_status: Mapping[str, Any],
    rotations: Sequence[Mapping[str, Any]],
) -> ServerKeyInfo:
    """A KMS key's rotation state from DescribeKey, GetKeyRotationStatus and
    ListKeyRotations. KMS has no version numbers: each rotation adds one."""
    dates = [_aware(r["RotationDate"]) for r in rotations if r.get("RotationDate")]
    last = max((d for d in dates if d is not None), default=None)
    period = rotation_status.get("RotationPeriodInDays")
    return ServerKeyInfo(
        name=key_id,
        provider=provider,
        kind=ServerKeyKind.AWS_KMS,
        latest_version=str(len(rotations) + 1),
        created_at=last or _aware(metadata.get("CreationDate")),
        last_rotated_at=last,
        auto_rotation=bool(rotation_status.get("KeyRotationEnabled")),
        rotation_period=timedelta(days=int(period)) if period else None,
    )


STAGING_TAG = TAG + "staging"
CLAIM_LABEL = "KEYVAULTCLAIM"
PROMOTING_TAG = TAG + "promoting"


def _promoted_at(tags: Mapping[str, str], current: str) -> datetime | None:
    """When ``current`` became current, from tags bound to that version: the tags a finished
    promote wrote, else the intent a crashed one wrote just before the label moved. Tags
    about another version are never taken for this one (None: the grace is unknown, and
    nothing is retired on a guess)."""
    if tags.get(TAG + "promoted-version") == current:
        return _parse_time(tags.get(TAG + "promoted-at"))
    version, _, when = tags.get(PROMOTING_TAG, "").partition(" ")
    if version == current:
        return _parse_time(when)
    if TAG + "promoted-version" not in tags and PROMOTING_TAG not in tags:
        return _parse_time(tags.get(TAG + "promoted-at"))  # written before versions were bound
    return None


def _tags(entry: Mapping[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in entry.get("Tags") or []}


def _labels(stages: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Label → VersionId. AWSPENDING on the current version is a finished rotation, not a
    pending one (AWS leaves the label there after a promote)."""
    by_label: dict[str, str] = {}
    for version, labels in stages.items():
        for label in labels:
            by_label[label] = version
    if by_label.get(PENDING) is not None and by_label.get(PENDING) == by_label.get(CURRENT):
        del by_label[PENDING]
    return by_label


_STAGE_FIELDS = ("version", "fingerprint", "created-at")


def _stage_tag_keys(stage: str) -> list[str]:
    return [f"{TAG}{stage}-{field}" for field in _STAGE_FIELDS]


def _version_tags(
    stage: str, version: str, value: SecretValue, created: datetime
) -> dict[str, str]:
    return {
        f"{TAG}{stage}-version": version,
        f"{TAG}{stage}-fingerprint": value.fingerprint,
        f"{TAG}{stage}-created-at": _iso(created),
    }


def _ref_tag(fingerprint: str) -> str:
    """Issuer refs are tagged by value fingerprint, not by stage: a runner that loses a
    stage race never overwrites the winner's, and a stage that crashed before its stage
    tags still finds its ref."""
    return f"{TAG}ref:{fingerprint}"


def _ref_of(tags: Mapping[str, str], fingerprint: str | None) -> str | None:
    return None if fingerprint is None else tags.get(_ref_tag(fingerprint))


def _ref_tags(fingerprint: str | None) -> list[str]:
    """The ref tag to drop with a version (none when its fingerprint is unknown)."""
    return [] if fingerprint is None else [_ref_tag(fingerprint)]


def _info_tags(stage: str, info: VersionInfo | None) -> dict[str, str]:
    if info is None:
        return {}
    tags = {f"{TAG}{stage}-version": info.version}
    if info.fingerprint is not None:
        tags[f"{TAG}{stage}-fingerprint"] = info.fingerprint
    if info.created_at is not None:
        tags[f"{TAG}{stage}-created-at"] = _iso(info.created_at)
    return tags


def _tagged(tags: Mapping[str, str], version: str, field: str) -> str | None:
    """A tag value, only if some stage's tags describe exactly this version."""
    for stage in ("current", "previous", "pending"):
        if tags.get(f"{TAG}{stage}-version") == version:
            return tags.get(f"{TAG}{stage}-{field}")
    return None


def _tagged_created_at(tags: Mapping[str, str], version: str) -> datetime | None:
    return _parse_time(_tagged(tags, version, "created-at"))


def _tags_vouch_for(info: KeyInfo) -> bool:
    return all(
        v.created_at is not None and v.fingerprint is not None
        for v in (info.current, info.previous, info.pending)
        if v is not None
    )


# -- the embedded store's master key, wrapped by KMS ----------------------------------------------

KMS_CONTEXT = {"keyvault:purpose": "file-store-master-key"}


def kms_keyring(
    kms: Any, key_id: str, wrapped_lines: Sequence[str] | None
) -> tuple[Keyring, str | None]:
    """Unwrap the store's master keys with KMS, or make a first one.

    Returns the keyring and, when a new data key was generated, the wrapped form to save.
    """
    target = f"KMS key {key_id}"
    if wrapped_lines:
        keys = []
        for line in wrapped_lines:
            try:
                blob = base64.b64decode(line.strip(), validate=True)
            except ValueError:
                raise ConfigError("wrapped master key file is not base64") from None
            plaintext = _aws_call(
                "Decrypt",
                target,
                lambda blob=blob: kms.decrypt(  # type: ignore[misc]
                    CiphertextBlob=blob, KeyId=key_id, EncryptionContext=KMS_CONTEXT
                ),
            )["Plaintext"]
            keys.append(MasterKey(plaintext))
        return Keyring(keys), None
    generated = _aws_call(
        "GenerateDataKey",
        target,
        lambda: kms.generate_data_key(
            KeyId=key_id, KeySpec="AES_256", EncryptionContext=KMS_CONTEXT
        ),
    )
    wrapped = base64.b64encode(generated["CiphertextBlob"]).decode("ascii")
    return Keyring([MasterKey(generated["Plaintext"])]), wrapped
