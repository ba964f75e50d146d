"""Reliability under hung backends and hands that edit keys outside keyvault."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hvac
import pytest

from keyvault.client.cache import STALE_RETRY_INTERVAL, KeyCache
from keyvault.errors import BackendUnavailableError, KeyvaultError
from keyvault.model import KeySet, KeyVersion
from keyvault.providers.aws import AwsProvider
from keyvault.providers.base import KeyProvider
from keyvault.providers.file import FileProvider
from keyvault.providers.vault import VaultProvider
from keyvault.secret import SecretValue
from rotation.engine import Result
from rotation.issuers import Issued
from tests.leaks import canary
from tests.rotation_helpers import RecordingIssuer
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


# -- the issuer window: claims before keys are minted ----------------------------------------------


class Killed(BaseException):
    """A kill -9 stand-in: not an error any code path handles."""


class IdempotentIssuer(RecordingIssuer):
    """An issuer that, like an API honouring Idempotency-Key, answers a repeated key with
    the key it made the first time; it counts what is live upstream."""

    def __init__(self) -> None:
        super().__init__()
        self.by_key: dict[str, Issued] = {}
        self.minted = 0

    def create(self, key_name: str, *, idempotency_key: str | None = None) -> Issued:
        if idempotency_key in self.by_key:
            return self.by_key[idempotency_key]
        issued = super().create(key_name)
        self.minted += 1
        if idempotency_key is not None:
            self.by_key[idempotency_key] = issued
        return issued


class KillOnStage:
    """A provider whose process dies right after the issuer answered, before the stage."""

    def __init__(self, inner: KeyProvider) -> None:
        self._inner = inner

    def __getattr__(self, attr: str) -> object:
        if attr == "stage":

            def killed(*args: object, **kwargs: object) -> None:
                raise Killed

            return killed
        return getattr(self._inner, attr)


def test_a_crash_between_create_and_stage_is_resumed_and_adopted(
    provider: KeyProvider, key_name: Callable[[str], str]
) -> None:
    """Killed after the issuer made a key: the claim stays; the next run takes it over after
    the lease, asks again with the same idempotency key, and adopts the same key: nothing
    live upstream that keyvault does not track."""
    from tests.rotation_helpers import make_kv, make_rotator, now_clock

    clock = now_clock()
    issuer = IdempotentIssuer()
    name, old = key_name("window"), SecretValue(canary())
    provider.create(name, old, created_at=clock.now - timedelta(days=99))
    dying = make_rotator(make_kv(KillOnStage(provider)), issuer, clock)
    with pytest.raises(Killed):
        dying.advance(name)
    assert issuer.minted == 1
    info = provider.describe(name)
    assert info.pending is None

    other = make_rotator(make_kv(provider), issuer, clock)  # a new process, within the lease
    waiting = other.advance(name)
    assert waiting.result == Result.CONFLICT and issuer.minted == 1

    resumed = make_rotator(make_kv(provider), issuer, clock, claim_lease=timedelta(0))
    outcome = resumed.advance(name)
    assert outcome.result == Result.ROTATED, outcome.detail
    assert issuer.minted == 1, "the resumed rotation adopted the key the dead one made"
    assert provider.get_keyset(name).primary.secret == issuer.created[0]
    assert provider.describe(name).claim is None or provider.name == "aws"


def test_losing_runners_mint_no_keys(provider: KeyProvider, key_name: Callable[[str], str]) -> None:
    from tests.rotation_helpers import make_kv, make_rotator, now_clock

    clock = now_clock()
    issuer = IdempotentIssuer()
    name = key_name("mint")
    provider.create(name, SecretValue(canary()), created_at=clock.now - timedelta(days=99))
    kv = make_kv(provider)
    barrier = threading.Barrier(4)
    results: list[Result] = []

    def run() -> None:
        rotator = make_rotator(kv, issuer, clock)
        barrier.wait()
        results.append(rotator.advance(name).result)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(Result.ROTATED) == 1, results
    assert issuer.minted == 1, "only the runner holding the claim asked the issuer"
    assert issuer.revoked == []


def test_http_issuer_sends_the_idempotency_key_and_the_vendor_honours_it(
    file_provider: FileProvider,
) -> None:
    from keyvault.registry import KeyVault
    from rotation.config import parse_config
    from rotation.issuers.http import HttpIssuer
    from tests.vendor_api import VendorAPI

    vendor = VendorAPI().start()
    try:
        admin = canary("admin")
        vendor.state.admin_keys.add(admin)
        file_provider.create("vendor/admin", SecretValue(admin))
        config = parse_config(
            {
                "providers": {"local": {"type": "file"}},
                "issuers": {
                    "vendor": {
                        "type": "http",
                        "create": {"url": f"{vendor.url}/admin/keys", "method": "POST"},
                        "key_path": "data.secret",
                        "id_path": "data.id",
                        "admin_key": "vendor/admin",
                    }
                },
            }
        )
        kv = KeyVault(config, providers={"local": file_provider})
        builtin = config.issuers["vendor"].builtin
        assert builtin is not None
        issuer = HttpIssuer(builtin, kv)  # type: ignore[arg-type]
        first = issuer.create("svc/a", idempotency_key="k-1")
        again = issuer.create("svc/a", idempotency_key="k-1")
        other = issuer.create("svc/a", idempotency_key="k-2")
        assert first.value == again.value and first.ref == again.ref
        assert other.value != first.value
        assert len(vendor.state.keys) == 2
    finally:
        vendor.stop()


def test_readers_never_see_a_torn_write(tmp_path: Path) -> None:
    """A reader on its own connection while another promotes and retires in a loop: each
    read is one snapshot, so a key row and its version rows always agree (their MACs)."""
    from keyvault.crypto import Keyring, MasterKey

    ring = Keyring([MasterKey.generate()])
    writer = FileProvider("local", tmp_path / "s.db", ring, create=True)
    reader = FileProvider("local", tmp_path / "s.db", ring)
    writer.create("svc/a", SecretValue(canary()))
    stop = threading.Event()
    errors: list[Exception] = []

    def read() -> None:
        while not stop.is_set():
            try:
                reader.get_keyset("svc/a")
                reader.describe("svc/a")
            except Exception as exc:
                errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for _ in range(150):
            info = writer.describe("svc/a")
            if info.previous is not None:
                info = writer.retire("svc/a", expected_previous=info.previous.version)
            staged = writer.stage("svc/a", SecretValue(canary()))
            assert staged.pending is not None
            writer.promote(
                "svc/a",
                pending_version=staged.pending.version,
                expected_current=info.current.version,
            )
    finally:
        stop.set()
        thread.join(10)
    assert errors == []
