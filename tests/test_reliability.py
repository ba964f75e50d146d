"""Reliability under hung backends and hands that edit keys outside keyvault."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import hvac
import pytest

from keyvault.client.cache import STALE_RETRY_INTERVAL, KeyCache
from keyvault.errors import BackendUnavailableError, KeyvaultError
from keyvault.model import KeySet, KeyVersion
from keyvault.providers.aws import AwsProvider
from keyvault.providers.file import FileProvider
from keyvault.providers.vault import VaultProvider
from keyvault.secret import SecretValue
from rotation.engine import Result
from tests.leaks import canary
from tests.servers import BaoServer


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _keyset(name: str = "k") -> KeySet:
    return KeySet(name, KeyVersion("1", SecretValue(canary()), None))


class Gate:
    """A fetch that can be made to hang until released, and says when it is inside."""

    def __init__(self, fetch: Callable[[], KeySet]) -> None:
        self._fetch = fetch
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.attempts = 0
        self.on_enter: Callable[[], None] = lambda: None

    def __call__(self) -> KeySet:
        self.attempts += 1
        self.entered.set()
        self.on_enter()
        self.release.wait(30)
        return self._fetch()


def test_callers_are_served_the_stale_key_while_one_refresh_hangs() -> None:
    clock = ManualClock()
    good = _keyset()
    state: dict[str, KeyvaultError | None] = {"error": None}

    def fetch() -> KeySet:
        if state["error"] is not None:
            raise state["error"]
        return good

    gate = Gate(fetch)
    cache = KeyCache(gate, ttl=60, jitter=0, max_stale=3600, clock=clock)
    assert cache.get() is good
    clock.now += 61
    gate.entered.clear()
    gate.release.clear()
    state["error"] = BackendUnavailableError("hung past its timeout (test)")
    gate.on_enter = lambda: setattr(clock, "now", clock.now + 10)  # the timeout elapses
    refresher = threading.Thread(target=cache.get)
    refresher.start()
    assert gate.entered.wait(10)
    # the refresh is hanging: everyone else gets the stale keyset without waiting for it
    for _ in range(100):
        assert cache.get() is good
    assert refresher.is_alive() and gate.attempts == 2
    gate.release.set()
    refresher.join(10)
    # after the failed refresh (which took 10 s), the next attempt is a full interval away
    for _ in range(100):
        assert cache.get() is good
    assert gate.attempts == 2
    clock.now += STALE_RETRY_INTERVAL + 0.1
    cache.get()
    assert gate.attempts == 3


@pytest.fixture
def paused_bao() -> Iterator[BaoServer]:
    server = BaoServer().start()
    yield server
    server.cleanup()


def test_a_paused_openbao_costs_one_caller_one_timeout(paused_bao: BaoServer) -> None:
    """OpenBao SIGSTOPped: the app keeps serving the cached key to every other caller."""
    provider = VaultProvider(
        "bao",
        hvac.Client(url=paused_bao.url, timeout=2),
        environ={"VAULT_TOKEN": paused_bao.root_token},
    )
    raw = canary()
    provider.create("svc/key", SecretValue(raw))
    clock = ManualClock()
    gate = Gate(lambda: provider.get_keyset("svc/key"))
    cache = KeyCache(gate, ttl=60, jitter=0, max_stale=3600, clock=clock)
    assert cache.get().primary.secret.reveal() == raw
    clock.now += 61
    paused_bao.pause()
    try:
        gate.entered.clear()
        outcome: list[object] = []
        refresher = threading.Thread(target=lambda: outcome.append(cache.get()))
        refresher.start()
        assert gate.entered.wait(10)
        served = [cache.get() for _ in range(50)]
        assert refresher.is_alive(), "the hung refresh should still be waiting on OpenBao"
        assert all(k.primary.secret.reveal() == raw for k in served)
        refresher.join(30)
        assert outcome and outcome[0] is served[0]  # the refresher got the stale key too
        attempts = gate.attempts
        for _ in range(50):
            cache.get()
        assert gate.attempts == attempts
    finally:
        paused_bao.resume()
    clock.now += STALE_RETRY_INTERVAL + 1
    assert cache.get().primary.secret.reveal() == raw
    provider.close()


# -- edits made outside keyvault (OpenBao) ---------------------------------------------------------


def _foreign_edits(vault_root: hvac.Client, path: str) -> dict[str, Callable[[], object]]:
    kv2 = vault_root.secrets.kv.v2
    return {
        "patch current to a string": lambda: kv2.patch(
            path=path, secret={"current": "hand-typed"}, mount_point="secret"
        ),
        "put a plain value": lambda: kv2.create_or_update_secret(
            path=path, secret={"value": "hand-typed"}, mount_point="secret"
        ),
        "soft delete": lambda: kv2.delete_latest_version_of_secret(path=path, mount_point="secret"),
    }


@pytest.mark.parametrize("edit", ["patch current to a string", "put a plain value", "soft delete"])
def test_a_foreign_edit_is_an_error_for_that_key_alone(
    vault_provider: VaultProvider, vault_root: hvac.Client, vault_prefix: str, edit: str
) -> None:
    from keyvault.client.cache import KeyCache
    from keyvault.model import BrokenKey
    from rotation.audit import audit
    from tests.rotation_helpers import make_kv

    raw = canary()
    vault_provider.create("svc/edited", SecretValue(raw))
    vault_provider.create("svc/fine", SecretValue(canary()))
    clock = ManualClock()
    cache = KeyCache(
        lambda: vault_provider.get_keyset("svc/edited"), ttl=60, max_stale=3600, clock=clock
    )
    assert cache.get().primary.secret.reveal() == raw
    _foreign_edits(vault_root, vault_prefix + "svc/edited")[edit]()

    listed = {info.name: info for info in vault_provider.list_keys()}
    assert isinstance(listed["svc/edited"], BrokenKey)
    assert not isinstance(listed["svc/fine"], BrokenKey)
    rows = {row.name: row for row in audit(make_kv(vault_provider), datetime.now(UTC))}
    assert rows["svc/edited"].status == "error" and rows["svc/edited"].error_code in (3, 6)
    assert rows["svc/fine"].status == "ok"
    with pytest.raises(KeyvaultError) as excinfo:
        vault_provider.get_keyset("svc/edited")
    assert not isinstance(excinfo.value, BackendUnavailableError)
    clock.now += 120  # past the TTL: the app keeps the last good key within max_stale
    assert cache.get().primary.secret.reveal() == raw


# -- clocks ---------------------------------------------------------------------------------


def test_a_replica_whose_clock_runs_ahead_never_retires_early(
    file_provider: FileProvider, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.rotation_helpers import RecordingIssuer, make_kv, make_rotator, now_clock

    clock = now_clock()
    issuer = RecordingIssuer()
    kv = make_kv(file_provider)
    file_provider.create("svc/a", SecretValue(canary()), created_at=clock.now - timedelta(99))
    assert make_rotator(kv, issuer, clock).advance("svc/a").result == Result.ROTATED
    ahead = make_rotator(kv, issuer, clock, backend_ahead=-timedelta(hours=2))
    clock.advance(timedelta(days=7, hours=1))  # past grace by our clock, not by the backend's
    with caplog.at_level(logging.WARNING):
        outcome = ahead.advance("svc/a")
    assert outcome.result == Result.UNCHANGED and issuer.revoked == []
    assert "clock is +7200s off the backend's" in caplog.text
    assert ahead.clock_skew == {"local": 7200.0}
    clock.advance(timedelta(hours=1, minutes=1))
    assert ahead.advance("svc/a").result == Result.RETIRED
    assert len(issuer.revoked) == 1


def test_vault_and_aws_report_their_own_clocks(
    vault_provider: VaultProvider, aws_provider: AwsProvider
) -> None:
    for provider in (vault_provider, aws_provider):
        backend = provider.backend_time()
        assert backend is not None
        assert abs((backend - datetime.now(UTC)).total_seconds()) < 120
