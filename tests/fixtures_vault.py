"""OpenBao fixtures: one real server per test session, a fresh KV prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import hvac
import pytest

from keyvault.providers.vault import VaultProvider
from tests.servers import BaoServer


@pytest.fixture(scope="session")
def openbao() -> Iterator[BaoServer]:
    server = BaoServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def vault_root(openbao: BaoServer) -> Iterator[hvac.Client]:
    client = hvac.Client(url=openbao.url, token=openbao.root_token)
    yield client
    client.adapter.close()


@pytest.fixture
def vault_prefix() -> str:
    return f"kvtest-{uuid.uuid4().hex[:10]}/"


@pytest.fixture
def vault_provider(openbao: BaoServer, vault_prefix: str) -> Iterator[VaultProvider]:
    provider = VaultProvider(
        "bao",
        hvac.Client(url=openbao.url),
        prefix=vault_prefix,
        environ={"VAULT_TOKEN": openbao.root_token},
    )
    yield provider
    provider.close()
