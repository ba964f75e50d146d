from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keyvault.crypto import Keyring, MasterKey
from keyvault.providers.base import KeyProvider
from keyvault.providers.file import FileProvider
from tests.vendor_api import VendorAPI

pytest_plugins = ["tests.fixtures_vault", "tests.fixtures_aws", "tests.fixtures_client"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-all",
        action="store_true",
        help="tests/chaos: kill at every I/O point, not an even sample of them",
    )


class Clock:
    """A clock tests move by hand: time is a parameter, never the wall clock."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


#: the config a test module's ``workdir`` gets unless the module sets ``CONFIG`` (or
#: ``WORKDIR_CONFIG = None`` for an empty directory, as before ``keyvault init``)
STANDARD_CONFIG = """
default_provider = "local"

[providers.local]
type = "file"
path = "store.db"
master_key_file = "master.key"

[policies.default]
max_age = "90d"
warn_age = "80d"
grace = "7d"
"""


@pytest.fixture
def workdir(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The current directory for a CLI test, with no config or environment leaking in."""
    monkeypatch.chdir(tmp_path)
    for variable in ("KEYVAULT_CONFIG", "KEYVAULT_ENV"):
        monkeypatch.delenv(variable, raising=False)
    config = getattr(
        request.module, "WORKDIR_CONFIG", getattr(request.module, "CONFIG", STANDARD_CONFIG)
    )
    return tmp_path if config is None else prepare_workdir(tmp_path, config)


@pytest.fixture
def vendor() -> Iterator[VendorAPI]:
    """The loopback vendor API (keys, admin API, scripted failures), one per test."""
    api = VendorAPI().start()
    yield api
    api.stop()


@pytest.fixture
def key_name() -> Callable[[str], str]:
    """Unique key names, so tests can share one server without colliding."""

    def make(stem: str = "test") -> str:
        return f"{stem}/{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def keyring() -> Keyring:
    return Keyring([MasterKey.generate()])


@pytest.fixture
def file_provider(tmp_path: Path, keyring: Keyring) -> Iterator[FileProvider]:
    provider = FileProvider("local", tmp_path / "store.db", keyring, create=True)
    yield provider
    provider.close()


WRITABLE_BACKENDS = ["file", "vault", "aws"]


@pytest.fixture(params=WRITABLE_BACKENDS)
def provider(request: pytest.FixtureRequest) -> KeyProvider:
    """Every writable backend, for the conformance suite."""
    fixture: KeyProvider = request.getfixturevalue(f"{request.param}_provider")
    return fixture


def prepare_workdir(directory: Path, config_text: str) -> Path:
    """A directory as `keyvault init` leaves it, with ``config_text`` as its config: the
    config, a master key file and every file store it names (only init creates stores)."""
    from keyvault.config import FileProviderConfig, load_config
    from keyvault.masterkey import write_key_file
    from keyvault.providers import build_provider

    config_path = directory / "keyvault.toml"
    config_path.write_text(config_text)
    key_path = directory / "master.key"
    if not key_path.exists():
        write_key_file(key_path, [MasterKey.generate()])
    config = load_config(config_path)
    for name, settings in config.providers.items():
        store = isinstance(settings, FileProviderConfig) and config.resolve_path(settings.path)
        if store and not store.exists():
            build_provider(config, name, create=True).close()
    return directory
