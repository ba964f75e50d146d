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

import contextlib
import email.utils
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

import botocore.exceptions as boto_errors

from keyvault.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    KeyNotFoundError,
    KeyvaultError,
)
from keyvault.model import (
    Claim,
    KeyInfo,
    KeySet,
    KeyVersion,
    ServerKeyInfo,
    Stage,
    VersionInfo,
    VersionRecord,
    key_path,
    utcnow,
)
from keyvault.pacing import Pacer
from keyvault.providers.aws.errors import BOTO_ERRORS, Refused, code_of, map_boto_error
from keyvault.providers.aws.kms import KmsKeys
from keyvault.providers.aws.tags import (
    CLAIM_LABEL,
    CURRENT,
    MANAGED_TAG,
    PENDING,
    PREVIOUS,
    PROMOTING_TAG,
    ROLLED_BACK_TAG,
    STAGING_TAG,
    TAG,
    aware,
    info_tags,
    iso,
    labels_of,
    promoted_at_of,
    ref_of,
    ref_tag,
    ref_tags,
    rolled_back_at_of,
    stage_tag_keys,
    tagged,
    tagged_created_at,
    tags_of,
    tags_vouch_for,
    version_tags,
)
from keyvault.providers.base import (
    KeyProvider,
    ServerRotatedKeys,
    check_replace,
    check_rollback,
    claim_decision,
    expect_no_previous,
    expect_version,
)
from keyvault.secret import SecretValue

T = TypeVar("T")
log = logging.getLogger("keyvault.aws")
#: the calls that share Secrets Manager's write quota (50/s per account and region)
QUOTA_WRITES = frozenset({"PutSecretValue", "UpdateSecretVersionStage", "UpdateSecret"})
_TOKEN_NAMESPACE = uuid.UUID("5b0c53a4-7a5e-4c1b-9f3e-6a8f4e1d2c30")


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
        write_rate: float | None = 40.0,
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
        #: one pacer per quota, shared by every thread using this provider
        self.write_pacer = Pacer(write_rate)
        self.tag_pacer = Pacer(write_rate)

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
        caller treats as answers: they come back as :class:`Refused` instead of raising.
        Writes under a shared quota wait for their turn first."""
        if action in QUOTA_WRITES:
            self.write_pacer.take()
        elif action in ("TagResource", "UntagResource"):
            self.tag_pacer.take()
        try:
            return func()
        except BOTO_ERRORS as exc:
            if isinstance(exc, boto_errors.ClientError) and code_of(exc) in refused:
                return Refused(code_of(exc))
            mapped = map_boto_error(exc, action, f"secret {self.prefix}{name}")
            if isinstance(mapped, KeyNotFoundError):
                mapped = self.not_found(name)
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
            tags: dict[str, str] = tags_of(self._describe_raw(name))
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
        keyset = KeySet(
            name,
            self._key_version(name, current, tags),
            None if previous is None else self._key_version(name, previous, tags),
            tags.get(TAG + "environment"),
        )
        self.record_access(name, keyset.primary.fingerprint)
        return keyset

    def _key_version(
        self, name: str, response: Mapping[str, Any], tags: Mapping[str, str]
    ) -> KeyVersion:
        version = response["VersionId"]
        value = self._value_of(name, response.get("SecretString"))
        return KeyVersion(
            version,
            value,
            tagged_created_at(tags, version) or aware(response.get("CreatedDate")),
            ref_of(tags, value.fingerprint),
        )

    def get_pending(self, name: str) -> KeyVersion | None:
        info = self.describe(name)
        if info.pending is None:
            return None
        pending = KeyVersion(
            info.pending.version,
            self._read_version(name, info.pending.version),
            info.pending.created_at,
            info.pending.ref,
        )
        self.record_access(name, pending.fingerprint)
        return pending

    def _read_version(self, name: str, version: str) -> SecretValue:
        response = self._call(
            "GetSecretValue",
            name,
            lambda: self.client.get_secret_value(SecretId=self._secret_id(name), VersionId=version),
        )
        return self._value_of(name, response.get("SecretString"))

    def describe(self, name: str) -> KeyInfo:
        described = self._describe_raw(name)
        if tags_of(described).get(MANAGED_TAG) != "true":
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
        tags = tags_of(entry)
        stages = entry.get("SecretVersionsToStages") or entry.get("VersionIdsToStages") or {}
        by_label = labels_of(stages)

        def version_info(label: str) -> VersionInfo | None:
            version = by_label.get(label)
            if version is None:
                return None
            fingerprint = tagged(tags, version, "fingerprint")
            created = tagged_created_at(tags, version)
            if created is None and versions is not None and version in versions:
                created = aware(versions[version].get("CreatedDate"))
            return VersionInfo(version, fingerprint, created, ref_of(tags, fingerprint))

        current, pending = version_info(CURRENT), version_info(PENDING)
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
        return self.key_info(
            name,
            {
                Stage.CURRENT: current,
                Stage.PREVIOUS: version_info(PREVIOUS),
                Stage.PENDING: pending,
            },
            environment=tags.get(TAG + "environment"),
            promoted_at=None if current is None else promoted_at_of(tags, current.version),
            problem=problem,
            rolled_back_at=None if current is None else rolled_back_at_of(tags, current.version),
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
                if tags_of(entry).get(MANAGED_TAG) != "true":
                    continue
                name = self._key_name(secret_name)
                if CURRENT not in labels_of(entry.get("SecretVersionsToStages") or {}):
                    log.info("secret %s is provisioned but has no value yet", secret_name)
                    continue
                info = self._info(name, entry, None)
                if not tags_vouch_for(info):
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
                    aware(item.get("CreatedDate")),
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
        tags = {MANAGED_TAG: "true", **version_tags("current", version, value, when)}
        if ref is not None:
            tags[ref_tag(value.fingerprint)] = ref
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
        existing = tags_of(described)
        if existing.get(MANAGED_TAG) == "true" and not labels_of(
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
        raise self.already_exists(name)

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
            self._tag(name, version_tags("pending", version, value, self._clock()))
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
            intent[ref_tag(value.fingerprint)] = ref
        self._tag(name, intent)
        # the same token with another value: a concurrent runner staged first
        lost = not self._put_version(name, secret_string, version, PENDING)
        # the token decides who owns the version: only its owner may describe it in tags
        if lost or self._read_version(name, version).fingerprint != value.fingerprint:
            if ref is not None:
                self._untag(name, [ref_tag(value.fingerprint)])
            raise ConflictError(f"key {name!r}: another runner staged version {version} first")
        # PutSecretValue moved AWSPENDING off a replaced version in the same call
        self._tag(name, version_tags("pending", version, value, self._clock()))
        if replaced is not None and replaced.fingerprint != value.fingerprint:
            self._untag(name, ref_tags(replaced.fingerprint))
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
        return Claim(token, holder, aware(existing.get("CreatedDate")))

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
        stamp = self._move_current(name, to=pending_version, away_from=expected_current)
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
            **info_tags("current", new),
            **info_tags("previous", old),
            TAG + "promoted-at": iso(stamp),
            TAG + "promoted-version": new.version,
        }
        stale = [
            key
            for key in (*stage_tag_keys("current"), *stage_tag_keys("previous"))
            if key not in tags
        ]
        self._tag(name, tags)  # first: a crash before the untag leaves the truth findable
        self._untag(name, [*stage_tag_keys("pending"), *stale, STAGING_TAG, PROMOTING_TAG])
        return self.describe(name)

    def _move_current(self, name: str, *, to: str, away_from: str) -> datetime:
        """Move AWSCURRENT from ``away_from`` to ``to``: the compare-and-set of a promotion
        and of a rollback (RemoveFromVersionId). Before the label moves, an intent tag
        records when (at the latest) it moved, so a crash before the final tags never loses
        or shortens a grace period. Returns that time."""
        stamp = max(filter(None, (self._clock(), self.backend_time_or_none())))
        self._tag(name, {PROMOTING_TAG: f"{to} {iso(stamp)}"})
        moved = self._call(
            "UpdateSecretVersionStage",
            name,
            lambda: self.client.update_secret_version_stage(
                SecretId=self._secret_id(name),
                VersionStage=CURRENT,
                MoveToVersionId=to,
                RemoveFromVersionId=away_from,
            ),
            refused=("InvalidParameterException",),
        )
        if isinstance(moved, Refused):
            raise ConflictError(
                f"key {name!r}: AWSCURRENT is no longer on version {away_from}; "
                "another writer promoted or rolled back first"
            )
        return stamp

    def rollback(self, name: str, *, expected_current: str, expected_previous: str) -> KeyInfo:
        """AWSCURRENT moves back to the previous version with the same compare-and-set as a
        promote (RemoveFromVersionId), and AWS moves AWSPREVIOUS to the demoted one itself."""
        info = self.describe(name)
        previous = info.previous
        check_rollback(
            name,
            info.current.version,
            previous.version if previous else None,
            expected_current,
            expected_previous,
        )
        assert previous is not None
        stamp = self._move_current(name, to=expected_previous, away_from=expected_current)
        self._tag(
            name,
            {
                **info_tags("current", previous),
                **info_tags("previous", info.current),
                TAG + "promoted-at": iso(stamp),
                TAG + "promoted-version": previous.version,
                ROLLED_BACK_TAG: f"{previous.version} {iso(stamp)}",
            },
        )
        self._untag(name, [PROMOTING_TAG])
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

    def history(self, name: str) -> list[VersionRecord]:
        """The versions Secrets Manager keeps (``ListSecretVersionIds``, deprecated ones
        included), with their stage labels, creation times and, from the tags or the value
        itself, fingerprints. AWS does not record when a label moved or who moved it:
        CloudTrail does (``UpdateSecretVersionStage``), and the history says so by None."""
        described = self._describe_raw(name)
        tags = tags_of(described)
        current = labels_of(described.get("VersionIdsToStages") or {}).get(CURRENT)
        records = []
        for version, entry in self._versions(name).items():
            labels = entry.get("VersionStages") or []
            if CLAIM_LABEL in labels:
                continue
            fingerprint = tagged(tags, version, "fingerprint")
            if fingerprint is None:
                read = self._call(
                    "GetSecretValue",
                    name,
                    lambda v=version: self.client.get_secret_value(  # type: ignore[misc]
                        SecretId=self._secret_id(name), VersionId=v
                    ),
                    refused=("ResourceNotFoundException", "InvalidRequestException"),
                )
                if isinstance(read, Refused):
                    continue  # AWS has dropped its value: nothing left to tell
                text = read.get("SecretString") or ""
                if '"keyvault_claim"' in text:
                    continue  # a claim, not a key
                fingerprint = self._value_of(name, text).fingerprint
            stage = next(
                (s for s, label in ((Stage.CURRENT, CURRENT), (Stage.PREVIOUS, PREVIOUS),
                                    (Stage.PENDING, PENDING)) if label in labels),
                None,
            )  # fmt: skip
            records.append(
                VersionRecord(
                    version=version,
                    fingerprint=fingerprint,
                    stage=stage,
                    created_at=tagged_created_at(tags, version) or aware(entry.get("CreatedDate")),
                    promoted_at=promoted_at_of(tags, version) if version == current else None,
                    ref=ref_of(tags, fingerprint),
                )
            )
        return sorted(records, key=lambda r: r.created_at or datetime.min.replace(tzinfo=UTC),
                      reverse=True)  # fmt: skip

    def retire(self, name: str, *, expected_previous: str, revoked: bool = True) -> KeyInfo:
        info = self.describe(name)
        if info.previous is None:
            return info
        expect_version(name, "previous", info.previous.version, expected_previous)
        self._remove_label(name, PREVIOUS, expected_previous)
        self._untag(name, [*stage_tag_keys("previous"), *ref_tags(info.previous.fingerprint)])
        return self.describe(name)

    def discard_pending(self, name: str, *, pending_version: str) -> KeyInfo:
        info = self.describe(name)
        if info.pending is None:
            return info
        expect_version(name, "pending", info.pending.version, pending_version)
        self._remove_label(name, PENDING, pending_version)
        self._untag(
            name, [*stage_tag_keys("pending"), *ref_tags(info.pending.fingerprint), STAGING_TAG]
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

    # -- KMS: server-rotated keys, a component of their own --------------------------------

    def _kms_keys(self) -> KmsKeys:
        if self.kms is None:
            raise ConfigError(f"provider {self.name!r} has no KMS client (kms_keys needs one)")
        return KmsKeys(self.name, self.kms, self.kms_keys)

    def list_server_keys(self) -> list[ServerKeyInfo]:
        return [] if not self.kms_keys else self._kms_keys().list_server_keys()

    def rotate_server_key(self, name: str) -> ServerKeyInfo:
        return self._kms_keys().rotate_server_key(name)
