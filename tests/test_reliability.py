"""Reliability under hung backends and hands that edit keys outside keyvault."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import hvac
import pytest

from keyvault.client.cache import STALE_RETRY_INTERVAL, KeyCache
from keyvault.errors import BackendUnavailableError, KeyvaultError
from keyvault.model import KeySet, KeyVersion
from keyvault.providers.vault import VaultProvider
from keyvault.secret import SecretValue
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
