"""The aws backend against moto: call counts, crash-safe staging, CAS, KMS, the CLI."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import msgspec
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from click.testing import CliRunner

from keyvault.errors import (
    AuthError,
    BackendUnavailableError,
    ConfigError,
    ConflictError,
    IntegrityError,
    KeyExistsError,
    KeyNotFoundError,
)
from keyvault.model import KeyInfo
from keyvault.providers import build_provider
from keyvault.providers.aws import AwsProvider, kms_key_info
from keyvault.secret import SecretValue
from rotation.cli import cli
from rotation.config import parse_config
from rotation.engine import Result
from tests.fixtures_aws import REGION, aws_clients
from tests.leaks import assert_not_leaked, canary


def count_calls(client: Any) -> Counter[str]:
    """Count every API call a boto3 client makes, through botocore's event hooks."""
    calls: Counter[str] = Counter()

    def before_call(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    client.meta.events.register("before-call.*.*", before_call)
    return calls


def inject(client: Any, operation: str, action: Callable[[], None], times: int = 1) -> None:
    """Run ``action`` just before the next ``times`` calls of ``operation``."""
    remaining = [times]

    def hook(**_: Any) -> None:
        if remaining[0] > 0:
            remaining[0] -= 1
            action()

    client.meta.events.register(f"before-call.secrets-manager.{operation}", hook)


def test_listing_300_is_three_list_calls_and_no_value_reads(aws_provider: AwsProvider) -> None:
    values = {f"bulk/{i:03d}": SecretValue(canary()) for i in range(300)}
    for name, value in values.items():
        aws_provider.create(name, value)
    calls = count_calls(aws_provider.client)
    listed = aws_provider.list_keys()
    assert len(listed) == 300
    assert calls["ListSecrets"] <= 3
    assert calls["GetSecretValue"] == 0 and calls["BatchGetSecretValue"] == 0
    assert calls["DescribeSecret"] == 0 and calls["ListSecretVersionIds"] == 0
    by_name = {info.name: info for info in listed}
    for name, value in values.items():
        assert by_name[name].current.fingerprint == value.fingerprint
        assert by_name[name].current.created_at is not None


def test_unmanaged_secret_is_left_alone(aws_provider: AwsProvider) -> None:
    raw = canary()
    aws_provider.client.create_secret(Name=aws_provider.prefix + "foreign", SecretString=raw)
    assert aws_provider.list_keys() == []
    with pytest.raises(KeyNotFoundError, match="not managed by keyvault"):
        aws_provider.get_keyset("foreign")
    with pytest.raises(KeyNotFoundError):
        aws_provider.stage("foreign", SecretValue(canary()))
    assert (
        aws_provider.client.get_secret_value(SecretId=aws_provider.prefix + "foreign")[
            "SecretString"
        ]
        == raw
    )


def test_stage_retried_after_a_crash_makes_one_version(aws_provider: AwsProvider) -> None:
    aws_provider.create("crash", SecretValue(canary()))
    value = SecretValue(canary())

    def crash() -> None:
        raise ClientError({"Error": {"Code": "InternalServiceError"}}, "PutSecretValue")

    # the call reaches AWS, then the process dies before it learns the answer
    original_put = aws_provider.client.put_secret_value

    def put_then_crash(**kwargs: Any) -> Any:
        original_put(**kwargs)
        crash()

    aws_provider.client.put_secret_value = put_then_crash
    with pytest.raises(BackendUnavailableError):
        aws_provider.stage("crash", value, request_token="rotation-1")
    aws_provider.client.put_secret_value = original_put

    retried = aws_provider.stage("crash", value, request_token="rotation-1")
    versions = aws_provider.client.list_secret_version_ids(SecretId=aws_provider.prefix + "crash")
    assert len(versions["Versions"]) == 2
    assert retried.pending is not None and retried.pending.fingerprint == value.fingerprint


def test_promote_loses_to_a_label_moved_under_it(aws_provider: AwsProvider) -> None:
    v1 = aws_provider.create("race", SecretValue(canary())).current.version
    staged = aws_provider.stage("race", SecretValue(canary()))
    assert staged.pending is not None
    pending = staged.pending.version
    other, _ = aws_clients()

    def someone_else_promotes() -> None:
        other.update_secret_version_stage(
            SecretId=aws_provider.prefix + "race",
            VersionStage="AWSCURRENT",
            MoveToVersionId=pending,
            RemoveFromVersionId=v1,
        )

    inject(aws_provider.client, "UpdateSecretVersionStage", someone_else_promotes)
    with pytest.raises(ConflictError, match="another writer promoted or rolled back first"):
        aws_provider.promote("race", pending_version=pending, expected_current=v1)
    assert aws_provider.describe("race").current.version == pending


def test_tags_lagging_a_crashed_promote_do_not_mislead(aws_provider: AwsProvider) -> None:
    """Killed after the label moved, before the tags: the resume still knows the new
    current, its fingerprint, the previous, and when (at the latest) it was promoted."""
    old, new = SecretValue(canary()), SecretValue(canary())
    v1 = aws_provider.create("lag", old).current.version
    staged = aws_provider.stage("lag", new)
    assert staged.pending is not None
    calls = {"tag": 0}

    def crash_after_the_intent(**_: Any) -> None:
        calls["tag"] += 1
        if calls["tag"] > 1:  # the promoting intent went through; the final tags do not
            raise ClientError({"Error": {"Code": "InternalServiceError"}}, "TagResource")

    event = "before-call.secrets-manager.TagResource"
    aws_provider.client.meta.events.register(event, crash_after_the_intent)
    before = aws_provider._clock()
    with pytest.raises(BackendUnavailableError):
        aws_provider.promote("lag", pending_version=staged.pending.version, expected_current=v1)
    aws_provider.client.meta.events.unregister(event, crash_after_the_intent)
    (info,) = aws_provider.list_keys()
    assert isinstance(info, KeyInfo)
    assert info.current.version == staged.pending.version
    assert info.current.fingerprint == new.fingerprint
    assert info.previous is not None and info.previous.fingerprint == old.fingerprint
    assert info.pending is None and info.problem is None
    assert info.promoted_at is not None and info.promoted_at >= before.replace(microsecond=0)


def test_a_crash_before_the_label_moves_changes_nothing(aws_provider: AwsProvider) -> None:
    v1 = aws_provider.create("early", SecretValue(canary())).current.version
    staged = aws_provider.stage("early", SecretValue(canary()))
    assert staged.pending is not None

    def crash(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "InternalServiceError"}}, "TagResource")

    event = "before-call.secrets-manager.TagResource"
    aws_provider.client.meta.events.register(event, crash)
    with pytest.raises(BackendUnavailableError):
        aws_provider.promote("early", pending_version=staged.pending.version, expected_current=v1)
    aws_provider.client.meta.events.unregister(event, crash)
    info = aws_provider.describe("early")
    assert info.current.version == v1 and info.pending is not None


def test_a_pending_version_from_another_tool_is_reported_never_promoted(
    aws_provider: AwsProvider,
) -> None:
    from tests.rotation_helpers import RecordingIssuer, make_kv, make_rotator, now_clock

    clock = now_clock()
    old = SecretValue(canary())
    aws_provider.create("foreign", old, created_at=clock.now - timedelta(days=100))
    aws_provider.client.put_secret_value(
        SecretId=aws_provider.prefix + "foreign",
        SecretString=canary("foreign"),
        VersionStages=["AWSPENDING"],
        ClientRequestToken=str(uuid.uuid4()),
    )
    info = aws_provider.describe("foreign")
    assert info.problem is not None and "not staged by keyvault" in info.problem
    issuer = RecordingIssuer()
    rotator = make_rotator(make_kv(aws_provider), issuer, clock)
    for force in (False, True):
        outcome = rotator.advance("foreign", force=force)
        assert outcome.result == Result.FAILED and "not staged by keyvault" in outcome.detail
    assert aws_provider.get_keyset("foreign").primary.secret == old
    assert issuer.created == []
    assert info.pending is not None
    aws_provider.discard_pending("foreign", pending_version=info.pending.version)
    assert rotator.advance("foreign").result == Result.ROTATED


def test_value_field(kms_key_id: str) -> None:
    secrets, kms = aws_clients()
    provider = AwsProvider(
        "aws", secrets, kms_client=kms, prefix="vf/", value_field="api_key", recovery_window_days=0
    )
    raw = canary()
    secrets.create_secret(
        Name="vf/svc",
        SecretString=json.dumps({"api_key": raw, "region": "eu"}),
        Tags=[{"Key": "keyvault:managed", "Value": "true"}],
    )
    assert provider.get_keyset("svc").primary.secret.reveal() == raw
    new = SecretValue(canary())
    staged = provider.stage("svc", new)
    assert staged.pending is not None
    pending_doc = json.loads(
        secrets.get_secret_value(SecretId="vf/svc", VersionStage="AWSPENDING")["SecretString"]
    )
    assert pending_doc == {"api_key": new.reveal(), "region": "eu"}
    provider.promote(
        "svc", pending_version=staged.pending.version, expected_current=staged.current.version
    )
    assert provider.get_keyset("svc").primary.secret == new
    secrets.create_secret(
        Name="vf/bad", SecretString="not json", Tags=[{"Key": "keyvault:managed", "Value": "true"}]
    )
    with pytest.raises(ConfigError, match="value_field"):
        provider.get_keyset("bad")


def test_encrypted_under_the_configured_kms_key(aws_provider: AwsProvider, kms_key_id: str) -> None:
    aws_provider.create("enc", SecretValue(canary()), environment="prod")
    described = aws_provider.client.describe_secret(SecretId=aws_provider.prefix + "enc")
    assert kms_key_id in described["KmsKeyId"]
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["keyvault:managed"] == "true" and tags["keyvault:environment"] == "prod"


def test_get_primaries_uses_batch_get(aws_provider: AwsProvider) -> None:
    values = {f"many/{i:02d}": SecretValue(canary()) for i in range(25)}
    for name, value in values.items():
        aws_provider.create(name, value)
    calls = count_calls(aws_provider.client)
    got = aws_provider.get_primaries(sorted(values))
    assert {name: v.secret for name, v in got.items()} == values
    assert calls["BatchGetSecretValue"] == 2 and calls["GetSecretValue"] == 0


def test_access_denied_names_the_action(aws_provider: AwsProvider) -> None:
    aws_provider.create("denied", SecretValue(canary()))

    def deny(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "User is not authorized"}},
            "GetSecretValue",
        )

    aws_provider.client.meta.events.register("before-call.secrets-manager.GetSecretValue", deny)
    with pytest.raises(AuthError, match=r"AWS denied GetSecretValue on secret .*denied"):
        aws_provider.get_keyset("denied")


def test_unreachable_endpoint(aws_credentials: None) -> None:
    fast = BotoConfig(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1)
    client = boto3.client(
        "secretsmanager", region_name=REGION, endpoint_url="http://127.0.0.1:9", config=fast
    )
    provider = AwsProvider("aws", client)
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        provider.list_keys()


def test_throttled_past_retries_is_unavailable(aws_provider: AwsProvider) -> None:
    def throttle(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException"}}, "ListSecrets")

    aws_provider.client.meta.events.register("before-call.secrets-manager.ListSecrets", throttle)
    with pytest.raises(BackendUnavailableError, match="ThrottlingException"):
        aws_provider.list_keys()


def test_errors_hold_no_secret(aws_provider: AwsProvider) -> None:
    raw = canary()
    aws_provider.create("leak", SecretValue(raw))
    with pytest.raises(KeyExistsError) as excinfo:
        aws_provider.create("leak", SecretValue(raw))
    assert_not_leaked(str(excinfo.value), raw, where="the error")


# -- KMS ---------------------------------------------------------------------------------------


def test_kms_rotation_status_and_on_demand_rotation(
    aws_provider: AwsProvider, kms_key_id: str
) -> None:
    kms = aws_provider.kms
    provider = AwsProvider("aws", aws_provider.client, kms_client=kms, kms_keys=[kms_key_id])
    (info,) = provider.list_server_keys()
    assert info.kind == "aws-kms" and info.auto_rotation is False
    assert info.rotation_period is None and info.last_rotated_at is None
    assert info.created_at is not None

    kms.enable_key_rotation(KeyId=kms_key_id, RotationPeriodInDays=90)
    (enabled,) = provider.list_server_keys()
    assert enabled.auto_rotation is True  # moto 5.2 omits RotationPeriodInDays; see below

    rotated = provider.rotate_server_key(kms_key_id)
    assert rotated.last_rotated_at is not None and rotated.latest_version == "2"


def test_kms_key_info_from_aws_shapes() -> None:
    """The parsing of the responses as AWS documents them (moto omits the period)."""
    created = datetime(2025, 1, 1, tzinfo=UTC)
    info = kms_key_info(
        "aws",
        "key-1",
        {"KeyId": "key-1", "CreationDate": created},
        {"KeyRotationEnabled": True, "RotationPeriodInDays": 180},
        [
            {"RotationDate": datetime(2025, 7, 1, tzinfo=UTC), "RotationType": "AUTOMATIC"},
            {"RotationDate": datetime(2025, 9, 1, tzinfo=UTC), "RotationType": "ON_DEMAND"},
        ],
    )
    assert info.rotation_period == timedelta(days=180)
    assert info.last_rotated_at == datetime(2025, 9, 1, tzinfo=UTC) == info.created_at
    assert info.latest_version == "3"
    never = kms_key_info(
        "aws", "key-2", {"CreationDate": created}, {"KeyRotationEnabled": False}, []
    )
    assert (
        never.created_at == created
        and never.auto_rotation is False
        and never.rotation_period is None
    )


def test_kms_missing_key(aws_provider: AwsProvider) -> None:
    provider = AwsProvider("aws", aws_provider.client, kms_client=aws_provider.kms)
    with pytest.raises(KeyNotFoundError):
        provider.rotate_server_key(str(uuid.uuid4()))


def test_kms_wrapped_master_key(kms_key_id: str, tmp_path: Path) -> None:
    config = parse_config(
        {
            "providers": {
                "local": {"type": "file", "path": "store.db", "master_key_kms": kms_key_id}
            }
        },
        source=tmp_path / "keyvault.toml",
    )
    raw = canary()
    first = build_provider(config, "local", create=True)
    first.create("k", SecretValue(raw))
    first.close()
    wrapped = tmp_path / "store.db.master-key.kms"
    assert wrapped.stat().st_mode & 0o077 == 0
    again = build_provider(config, "local")
    assert again.get_keyset("k").primary.secret.reveal() == raw
    again.close()

    other_key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
    wrong = parse_config(
        {"providers": {"local": {"type": "file", "path": "store.db", "master_key_kms": other_key}}},
        source=tmp_path / "keyvault.toml",
    )
    # AWS says IncorrectKeyException (an integrity error); moto says AccessDenied
    with pytest.raises((IntegrityError, AuthError), match=r"[Dd]ecrypt"):
        build_provider(wrong, "local")


# -- the CLI against a moto server -----------------------------------------------------------------


def test_cli_against_moto_server(moto_server: str, aws_credentials: None, tmp_path: Path) -> None:
    kms = boto3.client("kms", region_name=REGION, endpoint_url=moto_server)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    prefix = f"cli-{uuid.uuid4().hex[:8]}/"
    config = tmp_path / "keyvault.toml"
    config.write_text(
        f"""
[providers.aws]
type = "aws"
region = "{REGION}"
endpoint_url = "{moto_server}"
prefix = "{prefix}"
kms_key_id = "{key_id}"
recovery_window_days = 0
"""
    )
    raw = canary()

    def run(*args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(cli, ["--config", str(config), *args], input=input)

    assert run("put", "anthropic/prod", "--environment", "prod", input=raw).exit_code == 0
    got = run("get", "anthropic/prod", "--format", "json")
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["primary"]["fingerprint"] == SecretValue(raw).fingerprint
    listed = run("list", "--format", "json")
    assert [row["name"] for row in json.loads(listed.stdout)] == ["anthropic/prod"]
    for result in (got, listed):
        assert_not_leaked(result.output, raw, where="CLI output")
    assert run("get", "anthropic/prod", "--reveal").stdout == raw + "\n"
    assert run("get", "nope").exit_code == 3
    assert run("put", "anthropic/prod", input=canary()).exit_code == 2


def test_same_token_stage_race_leaves_the_winner_described(aws_provider: AwsProvider) -> None:
    """Two runners stage with the same request token: the first owns the version. The
    second is told what was staged (the contract's idempotence: the engine sees another
    value and withdraws its own) and never overwrites the winner's tags or ref — also when
    it reaches PutSecretValue itself, having read the key before the winner's stage."""
    aws_provider.create("race2", SecretValue(canary()))
    winner, loser = SecretValue(canary()), SecretValue(canary())
    aws_provider.stage("race2", winner, request_token="t", ref="winner-id")
    told = aws_provider.stage("race2", loser, request_token="t", ref="loser-id")
    assert told.pending is not None and told.pending.fingerprint == winner.fingerprint

    before_winner = aws_provider.describe("race2")
    original = aws_provider.describe
    stale_read = msgspec.structs.replace(before_winner, pending=None)  # read before the winner
    aws_provider.describe = lambda name: stale_read if name == "race2" else original(name)  # type: ignore[method-assign]
    aws_provider._versions = lambda name: {}  # type: ignore[method-assign]

    def same_token_other_value(**_: Any) -> None:
        # what AWS answers (moto 5.2 instead overwrites the version's value silently)
        raise ClientError({"Error": {"Code": "ResourceExistsException"}}, "PutSecretValue")

    events = aws_provider.client.meta.events
    events.register("before-call.secrets-manager.PutSecretValue", same_token_other_value)
    try:
        with pytest.raises(ConflictError, match="another runner staged"):
            aws_provider.stage("race2", loser, request_token="t", ref="loser-id")
    finally:
        events.unregister("before-call.secrets-manager.PutSecretValue", same_token_other_value)
        aws_provider.describe = original  # type: ignore[method-assign]
        del aws_provider._versions
    info = aws_provider.describe("race2")
    assert info.pending is not None
    assert info.pending.fingerprint == winner.fingerprint and info.pending.ref == "winner-id"
    pending = aws_provider.get_pending("race2")
    assert pending is not None and pending.secret == winner


# -- the one error boundary ---------------------------------------------------------------


def test_our_own_bugs_are_not_reported_as_aws_outages(aws_provider: AwsProvider) -> None:
    def bug(**_: Any) -> None:
        raise KeyError("a bug of ours")

    aws_provider.client.describe_secret = bug
    with pytest.raises(KeyError):
        aws_provider.describe("anything")


def test_value_field_write_fails_when_the_document_cannot_be_read(kms_key_id: str) -> None:
    """Throttled (or denied) reading the JSON document: the write fails instead of
    replacing the document with one holding the value field alone."""
    secrets, kms = aws_clients()
    provider = AwsProvider("aws", secrets, kms_client=kms, prefix="vf2/", value_field="api_key")
    document = {"api_key": canary(), "region": "eu", "account": "42"}
    secrets.create_secret(
        Name="vf2/svc",
        SecretString=json.dumps(document),
        Tags=[{"Key": "keyvault:managed", "Value": "true"}],
    )

    def throttle(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException"}}, "GetSecretValue")

    secrets.meta.events.register("before-call.secrets-manager.GetSecretValue", throttle)
    with pytest.raises(BackendUnavailableError, match="ThrottlingException"):
        provider.stage("svc", SecretValue(canary()))
    secrets.meta.events.unregister("before-call.secrets-manager.GetSecretValue", throttle)
    assert json.loads(secrets.get_secret_value(SecretId="vf2/svc")["SecretString"]) == document
    assert provider.describe("svc").pending is None
    secrets.put_secret_value(SecretId="vf2/svc", SecretString="not json")
    with pytest.raises(ConfigError, match="not a JSON object"):
        provider.stage("svc", SecretValue(canary()))


# -- pacing under the write quota ----------------------------------------------------------


@pytest.mark.parametrize("write_rate", [40.0, None], ids=["paced", "unpaced-control"])
def test_a_sweep_stays_under_the_shared_write_quota(
    kms_key_id: str, write_rate: float | None
) -> None:
    from rotation.sweep import sweep
    from tests.fixtures_aws import emulate_put_idempotency, throttle_writes
    from tests.rotation_helpers import RecordingIssuer, make_kv, make_rotator, now_clock

    secrets, kms = aws_clients()
    emulate_put_idempotency(secrets)
    provider = AwsProvider(
        "aws",
        secrets,
        kms_client=kms,
        prefix=f"pace-{uuid.uuid4().hex[:6]}/",
        recovery_window_days=0,
        write_rate=write_rate,
    )
    clock = now_clock()
    for index in range(30):
        provider.create(f"fleet/k{index:02d}", SecretValue(canary()),
                        created_at=clock.now - timedelta(days=95))  # fmt: skip
    throttled = throttle_writes(secrets)
    kv = make_kv(provider)
    report = sweep(kv, make_rotator(kv, RecordingIssuer(), clock), concurrency=8)
    failed = report.count(Result.FAILED)
    if write_rate is not None:
        assert failed == 0 and throttled == [], [o.detail for o in report.outcomes if o.detail]
        assert report.count(Result.ROTATED) == 30
        assert 0 < report.rate <= write_rate
    else:  # the shim bites when nothing paces the writes: the test above can fail
        assert throttled and failed > 0
