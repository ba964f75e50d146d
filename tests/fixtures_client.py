"""A real file store that counts its reads and can be switched off, and a KeyVault on it:
the thin client's tests (the client, the limiter) share these."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyvault.config import parse_config
from keyvault.crypto import Keyring, MasterKey
from keyvault.errors import BackendUnavailableError
from keyvault.model import KeySet
from keyvault.providers.base import KeyProvider
from keyvault.providers.file import FileProvider
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue


class CountingProvider(FileProvider):
    """A real file store that counts keyset reads and can be switched off."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads = 0
        self.down = False
        self._count_lock = threading.Lock()

    def get_keyset(self, name: str) -> KeySet:
        with self._count_lock:
            self.reads += 1
        if self.down:
            raise BackendUnavailableError("store is down (test)")
        return super().get_keyset(name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingProvider]:
    provider = CountingProvider(
        "local", tmp_path / "s.db", Keyring([MasterKey.generate()]), create=True
    )
    yield provider
    provider.close()


@pytest.fixture
def kv(store: CountingProvider, monkeypatch: pytest.MonkeyPatch) -> KeyVault:
    monkeypatch.delenv("KEYVAULT_ENV", raising=False)
    config = parse_config({"providers": {"local": {"type": "file"}}})
    return KeyVault(config, providers={"local": store})


def rotate(store: KeyProvider, name: str, value: str) -> None:
    """One rotation straight on a provider: retire any previous, stage, promote."""
    info = store.describe(name)
    if info.previous is not None:  # a promotion never drops an unretired previous
        info = store.retire(name, expected_previous=info.previous.version)
    staged = store.stage(name, SecretValue(value))
    assert staged.pending is not None
    store.promote(
        name, pending_version=staged.pending.version, expected_current=info.current.version
    )


@pytest.fixture
def redis_server() -> Iterator[Any]:
    """A real Redis on a free loopback port, for one test (killing it is part of some)."""
    from tests.servers import RedisServer, redis_binary

    if redis_binary() is None:
        pytest.skip("redis-server is not installed (scripts/install-test-tools installs it)")
    server = RedisServer().start()
    yield server
    server.stop()
