"""AWS fixtures: moto in-process for unit tests, a moto server on loopback for HTTP users."""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.server import ThreadedMotoServer

from keyvault.providers.aws import BOTO_CONFIG, AwsProvider
from tests.servers import free_port

REGION = "eu-west-1"


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, so nothing can ever reach a real account."""
    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(var, value)
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def aws_mock(aws_credentials: None) -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def kms_key_id(aws_mock: None) -> str:
    kms = boto3.client("kms", region_name=REGION)
    return str(kms.create_key(Description="keyvault tests")["KeyMetadata"]["KeyId"])


def aws_clients(endpoint_url: str | None = None) -> tuple[Any, Any]:
    kwargs: dict[str, Any] = {"region_name": REGION, "config": BOTO_CONFIG}
    if endpoint_url is not None:
        kwargs["endpoint_url"] = endpoint_url
    return boto3.client("secretsmanager", **kwargs), boto3.client("kms", **kwargs)


_PUT_LOCK = threading.Lock()


def emulate_put_idempotency(client: Any) -> None:
    """Give moto what AWS does and moto 5.2 does not: PutSecretValue with a known
    ClientRequestToken and a different value fails with ResourceExistsException, atomically
    (AWS checks server-side; here a lock spans the check and the call)."""
    original = client.put_secret_value

    def put_secret_value(**params: Any) -> Any:
        with _PUT_LOCK:
            try:
                existing = client.get_secret_value(
                    SecretId=params["SecretId"], VersionId=params["ClientRequestToken"]
                )
            except ClientError:
                existing = None
            if existing is not None and existing.get("SecretString") != params.get("SecretString"):
                raise ClientError({"Error": {"Code": "ResourceExistsException"}}, "PutSecretValue")
            return original(**params)

    client.put_secret_value = put_secret_value


def throttle_writes(client: Any, per_second: int = 50) -> list[str]:
    """AWS's shared write quota, as moto does not have it: more than ``per_second`` of
    PutSecretValue, UpdateSecretVersionStage and UpdateSecret in any second is throttled."""
    window: collections.deque[float] = collections.deque()
    lock = threading.Lock()
    throttled: list[str] = []

    def check(**_: Any) -> None:
        with lock:
            now = time.monotonic()
            while window and now - window[0] > 1.0:
                window.popleft()
            if len(window) >= per_second:
                throttled.append("write")
                raise ClientError({"Error": {"Code": "ThrottlingException"}}, "write")
            window.append(now)

    for operation in ("PutSecretValue", "UpdateSecretVersionStage", "UpdateSecret"):
        client.meta.events.register(f"before-call.secrets-manager.{operation}", check)
    return throttled


@pytest.fixture
def aws_provider(kms_key_id: str) -> AwsProvider:
    secrets, kms = aws_clients()
    emulate_put_idempotency(secrets)
    return AwsProvider(
        "aws",
        secrets,
        kms_client=kms,
        prefix=f"kvtest-{uuid.uuid4().hex[:8]}/",
        kms_key_id=kms_key_id,
        recovery_window_days=0,
    )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port, for the CLI, the service and Terraform."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
