"""Kill ``keyvault rotate --all`` (SIGKILL) at every I/O point of a rotation, on every
writable backend, then resume it and check the invariants: exactly one current, nothing
live at the issuer that keyvault does not track, no grace period shortened, nothing left
half-done.

Two scenarios: a due key (claim, create, stage, test, promote) and a key whose previous
version's grace has passed (revoke, retire). The points are numbered by a count-only run
(``tests/chaos/killer.py``); the default run samples them evenly, ``--chaos-all`` runs
every one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hvac
import pytest

from keyvault.crypto import MasterKey
from keyvault.masterkey import write_key_file
from keyvault.providers import build_provider
from keyvault.providers.base import KeyProvider
from keyvault.secret import SecretValue, fingerprint
from rotation.config import load_config
from tests.leaks import canary
from tests.servers import BaoServer
from tests.vendor_api import VendorAPI

SAMPLE = 5  # kill points per backend and scenario in the default run
KEY = "svc/chaos"
ROOT = Path(__file__).resolve().parents[2]

POLICY = """
[policies.default]
max_age = "90d"
warn_age = "80d"
grace = "7d"

[service]
claim_lease = "0s"      # a resumed run takes a dead runner's claim over at once
"""


@dataclass
class Setup:
    workdir: Path
    config: Path
    env: dict[str, str]
    vendor: VendorAPI
    old_value: str
    backdate: Callable[[KeyProvider], None]

    def provider(self) -> KeyProvider:
        config = load_config(self.config)
        return build_provider(config, next(iter(config.providers)))


def _file_backend(workdir: Path) -> tuple[str, dict[str, str]]:
    write_key_file(workdir / "master.key", [MasterKey.generate()])
    table = '[providers.local]\ntype = "file"\npath = "store.db"\nmaster_key_file = "master.key"\n'
    return table, {}


def _backdate_file(provider: KeyProvider) -> None:
    from keyvault.providers.file import FileProvider

    assert isinstance(provider, FileProvider)
    path, ring = provider.path, provider._keyring
    provider.close()
    # re-promote-time the key through the store's own code, so its MACs stay whole
    past = datetime.now(UTC) - timedelta(days=8)
    store = FileProvider("local", path, ring, clock=lambda: past)
    with store._write() as db:
        db.execute("UPDATE keys SET promoted_at = ? WHERE name = ?", (past.isoformat(), KEY))
        store._tag_key(db, KEY)
    store.close()


@pytest.fixture(params=["file", "vault", "aws"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _setup(backend: str, workdir: Path, request: pytest.FixtureRequest, previous: bool) -> Setup:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    env["PYTHONPATH"] = str(ROOT)
    if backend == "file":
        table, extra = _file_backend(workdir)
        backdate: Callable[[KeyProvider], None] = _backdate_file
    elif backend == "vault":
        server: BaoServer = request.getfixturevalue("openbao")
        prefix = f"chaos-{uuid.uuid4().hex[:8]}/"
        table = (
            f'[providers.bao]\ntype = "vault"\nurl = "{server.url}"\nprefix = "{prefix}"\n'
            'token_env = "KV_CHAOS_TOKEN"\n'
        )
        extra = {"KV_CHAOS_TOKEN": server.root_token}

        def backdate(provider: KeyProvider) -> None:
            root = hvac.Client(url=server.url, token=server.root_token)
            doc = root.secrets.kv.v2.read_secret_version(
                path=prefix + KEY, mount_point="secret", raise_on_deleted_version=True
            )["data"]["data"]
            doc["promoted_at"] = (datetime.now(UTC) - timedelta(days=8)).isoformat()
            root.secrets.kv.v2.create_or_update_secret(
                path=prefix + KEY, secret=doc, mount_point="secret"
            )
    else:
        request.getfixturevalue("aws_credentials")
        endpoint: str = request.getfixturevalue("moto_server")
        prefix = f"chaos-{uuid.uuid4().hex[:8]}/"
        table = (
            f'[providers.aws]\ntype = "aws"\nregion = "us-east-1"\nendpoint_url = "{endpoint}"\n'
            f'prefix = "{prefix}"\nrecovery_window_days = 0\n'
        )
        extra = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}

        def backdate(provider: KeyProvider) -> None:
            info = provider.describe(KEY)
            when = (datetime.now(UTC) - timedelta(days=8)).isoformat()
            provider.client.tag_resource(  # type: ignore[attr-defined]
                SecretId=prefix + KEY,
                Tags=[
                    {"Key": "keyvault:promoted-at", "Value": when},
                    {"Key": "keyvault:promoted-version", "Value": info.current.version},
                ],
            )

    vendor = VendorAPI().start()
    request.addfinalizer(vendor.stop)
    config = workdir / "keyvault.toml"
    config.write_text(table + POLICY + vendor.issuer_toml(KEY))
    env.update(extra)
    os.environ.update(extra)  # this process reads the same backends to set up and check
    setup = Setup(workdir, config, env, vendor, canary("old"), backdate)
    loaded = load_config(config)
    provider = build_provider(loaded, next(iter(loaded.providers)), create=True)
    admin = canary("admin")
    vendor.state.admin_keys.add(admin)
    provider.create("vendor/admin", SecretValue(admin))
    old_id = vendor.state.add_key(setup.old_value)
    provider.create(
        KEY,
        SecretValue(setup.old_value),
        created_at=datetime.now(UTC) - timedelta(days=100),
        ref=old_id,
    )
    if previous:  # rotate once, then let the grace period pass
        assert _keyvault(setup, "rotate", KEY).returncode == 0
        backdate(provider)
    provider.close()
    return setup


def _keyvault(setup: Setup, *args: str, kill_at: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**setup.env, "KEYVAULT_CHAOS_KILL_AT": str(kill_at)}
    env["KEYVAULT_CHAOS_COUNT_FILE"] = str(setup.workdir / "points")
    return subprocess.run(
        [sys.executable, "-m", "tests.chaos.killer", "--config", str(setup.config), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _points(setup: Setup) -> int:
    done = _keyvault(setup, "rotate", "--all", "--format", "json")
    assert done.returncode == 0, done.stderr
    return int((setup.workdir / "points").read_text())


def _resume(setup: Setup) -> None:
    """Run rotate --all until it has nothing left to finish (a few runs at most)."""
    for _ in range(4):
        done = _keyvault(setup, "rotate", "--all", "--format", "json")
        outcomes = json.loads(done.stdout or "[]")
        if done.returncode == 0 and all(
            o["result"] in ("unchanged", "rotated", "retired") for o in outcomes
        ):
            return
    raise AssertionError(f"rotation did not settle: {done.stdout} {done.stderr}")


def _check_invariants(setup: Setup, previous_scenario: bool) -> None:
    provider = setup.provider()
    try:
        info = provider.describe(KEY)
        keyset = provider.get_keyset(KEY)
    finally:
        provider.close()
    assert info.pending is None, "nothing left half-done"
    assert info.claim is None or info.provider == "aws"
    vendor = setup.vendor.state
    assert vendor.is_valid(keyset.primary.secret.reveal()), "the current key works upstream"
    tracked = {keyset.primary.fingerprint} | (
        {keyset.secondary.fingerprint} if keyset.secondary else set()
    )
    with vendor.lock:
        live = {fingerprint(e["value"]) for e in vendor.keys.values() if e["status"] == "active"}
    assert live <= tracked, "a key live upstream that keyvault does not track"
    old_fp = fingerprint(setup.old_value)
    if previous_scenario:
        # the grace had passed: the oldest key is revoked and dropped
        assert vendor.status_of(setup.old_value) == "inactive"
        assert old_fp not in tracked
    else:
        # the grace period started by this rotation is whole: the old key is still valid
        assert keyset.secondary is not None and keyset.secondary.fingerprint == old_fp
        assert vendor.is_valid(setup.old_value)


def _chosen(total: int, everything: bool) -> list[int]:
    if everything or total <= SAMPLE:
        return list(range(1, total + 1))
    step = (total - 1) / (SAMPLE - 1)
    return sorted({1 + round(i * step) for i in range(SAMPLE)})


@pytest.mark.parametrize("previous", [False, True], ids=["rotate", "retire"])
def test_kill_at_every_io_point_then_resume(
    backend: str,
    previous: bool,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    (tmp_path / "count").mkdir()
    counting = _setup(backend, tmp_path / "count", request, previous)
    total = _points(counting)
    _check_invariants(counting, previous)
    points = _chosen(total, request.config.getoption("--chaos-all"))
    for point in points:
        workdir = tmp_path / f"kill-{point}"
        workdir.mkdir()
        setup = _setup(backend, workdir, request, previous)
        killed = _keyvault(setup, "rotate", "--all", "--format", "json", kill_at=point)
        assert killed.returncode == -9, (point, killed.returncode, killed.stderr[-500:])
        _resume(setup)
        _check_invariants(setup, previous)
    print(f"{backend}/{'retire' if previous else 'rotate'}: {len(points)} of {total} kill points")


@pytest.fixture(autouse=True)
def _no_leftover_env() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
