"""One limiter per key per process: the slots, the line, the pause, across threads and loops."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from keyvault.client.limiter import KeyLimiter, LimitSettings
from keyvault.errors import BackendUnavailableError, ConfigError, QueueFullError, QueueTimeoutError
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue
from tests.fixtures_client import CountingProvider
from tests.leaks import canary
from tests.vendor_api import VendorAPI


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    """Poll a condition another thread makes true (never asserts on how long it took)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


# -- the limiter alone ----------------------------------------------------------------------


def test_waiters_get_slots_in_arrival_order() -> None:
    limiter = KeyLimiter("k", LimitSettings(max_in_flight=1, max_queue=10, queue_timeout=10))
    limiter.acquire()
    order: list[int] = []

    def wait_then_record(i: int) -> None:
        limiter.acquire()
        order.append(i)
        limiter.release()

    threads = []
    for i in range(5):
        thread = threading.Thread(target=wait_then_record, args=(i,))
        thread.start()
        threads.append(thread)
        wait_until(lambda n=i: limiter.queued == n + 1)  # joined the line before the next
    limiter.release()
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3, 4]
    assert (limiter.in_flight, limiter.queued) == (0, 0)


def test_a_full_queue_refuses_at_once_and_says_why() -> None:
    limiter = KeyLimiter("api/key", LimitSettings(max_in_flight=1, max_queue=1, queue_timeout=10))
    limiter.acquire()
    waiter = threading.Thread(target=limiter.acquire)
    waiter.start()
    wait_until(lambda: limiter.queued == 1)
    with pytest.raises(QueueFullError, match=r"'api/key': 1 requests in flight and 1 waiting"):
        limiter.acquire()
    limiter.release()  # the slot goes to the waiter
    waiter.join()
    assert (limiter.in_flight, limiter.queued) == (1, 0)
    assert issubclass(QueueFullError, BackendUnavailableError)


def test_a_caller_that_waited_queue_timeout_gives_up_and_leaves_the_line() -> None:
    limiter = KeyLimiter("k", LimitSettings(max_in_flight=1, max_queue=5, queue_timeout=0.05))
    limiter.acquire()
    with pytest.raises(QueueTimeoutError, match="queue_timeout"):
        limiter.acquire()
    assert (limiter.in_flight, limiter.queued) == (1, 0)
    limiter.release()
    assert limiter.in_flight == 0
    limiter.acquire()  # the slot is free again: nothing leaked
    limiter.release()


def test_async_waiters_work_from_any_event_loop_and_share_the_line_with_threads() -> None:
    limiter = KeyLimiter("k", LimitSettings(max_in_flight=2, max_queue=50, queue_timeout=10))
    peak = 0
    current = 0
    lock = threading.Lock()

    async def one() -> None:
        nonlocal peak, current
        await limiter.acquire_async()
        with lock:
            current += 1
            peak = max(peak, current)
        await asyncio.sleep(0.001)
        with lock:
            current -= 1
        limiter.release()

    async def many() -> None:
        await asyncio.gather(*(one() for _ in range(10)))

    def thread_one() -> None:
        nonlocal peak, current
        limiter.acquire()
        with lock:
            current += 1
            peak = max(peak, current)
        time.sleep(0.001)
        with lock:
            current -= 1
        limiter.release()

    threads = [threading.Thread(target=thread_one) for _ in range(10)]
    for thread in threads:
        thread.start()
    asyncio.run(many())  # one loop
    asyncio.run(many())  # and another: no "bound to a different event loop"
    loop_in_thread = threading.Thread(target=lambda: asyncio.run(many()))  # a third
    loop_in_thread.start()
    for thread in [*threads, loop_in_thread]:
        thread.join()
    assert peak <= 2
    assert (limiter.in_flight, limiter.queued) == (0, 0)


def test_a_cancelled_async_waiter_gives_its_place_back() -> None:
    limiter = KeyLimiter("k", LimitSettings(max_in_flight=1, max_queue=5, queue_timeout=10))
    limiter.acquire()

    async def cancel_one() -> None:
        task = asyncio.ensure_future(limiter.acquire_async())
        while limiter.queued == 0:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_one())
    assert limiter.queued == 0
    limiter.release()
    assert limiter.in_flight == 0


def test_a_slot_is_not_handed_to_a_waiter_whose_loop_is_closed() -> None:
    """A waiter left behind by a loop that closed without cancelling it must not swallow
    the slot: it passes to the next waiter (or back to the pool)."""
    limiter = KeyLimiter("k", LimitSettings(max_in_flight=1, max_queue=5, queue_timeout=10))
    limiter.acquire()
    loop = asyncio.new_event_loop()
    orphan = loop.create_task(limiter.acquire_async())
    loop.run_until_complete(asyncio.sleep(0))  # the task queues, then the loop goes away
    assert limiter.queued == 1
    loop.close()
    limiter.release()
    assert (limiter.in_flight, limiter.queued) == (0, 0)
    limiter.acquire()  # the slot is usable
    limiter.release()
    del orphan


def test_async_queue_timeout() -> None:
    limiter = KeyLimiter("k", LimitSettings(max_in_flight=1, max_queue=5, queue_timeout=0.05))
    limiter.acquire()
    with pytest.raises(QueueTimeoutError):
        asyncio.run(limiter.acquire_async())
    assert (limiter.in_flight, limiter.queued) == (1, 0)


def test_no_slot_leaks_under_timeouts_cancellations_and_two_loops() -> None:
    """Threads and tasks on two loops take, hold and give back slots while some time out
    and some are cancelled mid-wait: afterwards every slot is free and nobody is queued, and
    at no moment were more than max_in_flight held."""
    import random

    limiter = KeyLimiter("k", LimitSettings(max_in_flight=3, max_queue=1000, queue_timeout=0.02))
    held = 0
    peak = 0
    lock = threading.Lock()
    rng = random.Random(7)

    def hold(seconds: float) -> None:
        nonlocal held, peak
        with lock:
            held += 1
            peak = max(peak, held)
        time.sleep(seconds)
        with lock:
            held -= 1

    def thread_worker(seed: int) -> None:
        local = random.Random(seed)
        for _ in range(30):
            try:
                limiter.acquire()
            except QueueTimeoutError:
                continue
            try:
                hold(local.uniform(0, 0.003))
            finally:
                limiter.release()

    async def task_worker(seed: int) -> None:
        local = random.Random(seed)
        for _ in range(30):
            try:
                await limiter.acquire_async()
            except QueueTimeoutError:
                continue
            try:
                assert limiter.in_flight <= 3
                await asyncio.sleep(local.uniform(0, 0.003))
            finally:
                limiter.release()

    async def loop_main(seed: int) -> None:
        tasks = [asyncio.ensure_future(task_worker(seed * 100 + i)) for i in range(8)]
        await asyncio.sleep(0.05)
        for task in rng.sample(tasks, 3):  # cancelled wherever they are: waiting or holding
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    threads = [threading.Thread(target=thread_worker, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=lambda i=i: asyncio.run(loop_main(i))) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak <= 3
    assert (limiter.in_flight, limiter.queued) == (0, 0)


def test_a_pause_is_measured_on_the_limiters_clock() -> None:
    now = [100.0]
    limiter = KeyLimiter("k", clock=lambda: now[0])
    assert limiter.pause_left() == 0
    limiter.pause(2.0)
    limiter.pause(1.0)  # a shorter pause never shortens a longer one
    assert limiter.pause_left() == 2.0
    now[0] += 1.5
    assert limiter.pause_left() == 0.5
    now[0] += 1.0
    assert limiter.pause_left() == 0


# -- every client of a key shares it ----------------------------------------------------------


@pytest.fixture
def slow_key(store: CountingProvider, vendor: VendorAPI) -> str:
    raw = canary()
    store.create("api/key", SecretValue(raw))
    vendor.state.add_key(raw)
    vendor.state.delay = 0.02  # long enough that 50 callers pile up
    return raw


def test_five_clients_of_one_key_never_exceed_max_in_flight(
    kv: KeyVault, vendor: VendorAPI, slow_key: str
) -> None:
    sync_client = kv.client("api/key", base_url=vendor.url)
    second_sync = kv.client("api/key", base_url=vendor.url)
    async_client = kv.async_client("api/key", base_url=vendor.url)
    claude = kv.anthropic("api/key", base_url=vendor.url, max_retries=0)
    async_claude = kv.async_anthropic("api/key", base_url=vendor.url, max_retries=0)
    statuses: list[int] = []
    lock = threading.Lock()

    def sync_calls(client: Any) -> None:
        for _ in range(10):
            response = client.get("/v1/models")
            with lock:
                statuses.append(response.status_code)

    def sdk_calls() -> None:
        for _ in range(10):
            claude.messages.create(
                model="claude-test", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
            with lock:
                statuses.append(200)

    async def async_calls() -> None:
        async with async_client:
            for response in await asyncio.gather(
                *(async_client.get("/v1/models") for _ in range(10))
            ):
                with lock:
                    statuses.append(response.status_code)
        messages = await asyncio.gather(
            *(
                async_claude.messages.create(
                    model="claude-test", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                )
                for _ in range(10)
            )
        )
        with lock:
            statuses.extend(200 for message in messages if message.content[0].text == "ok")

    threads = [
        threading.Thread(target=sync_calls, args=(sync_client,)),
        threading.Thread(target=sync_calls, args=(second_sync,)),
        threading.Thread(target=sdk_calls),
        threading.Thread(target=lambda: asyncio.run(async_calls())),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 50
    assert vendor.state.requests == 50
    assert 1 < vendor.state.max_in_flight <= 5  # the config's default max_in_flight
    assert kv.limiter("api/key").in_flight == 0


def test_max_queue_and_queue_timeout_from_the_config(
    store: CountingProvider, vendor: VendorAPI, slow_key: str
) -> None:
    from keyvault.config import parse_config

    config = parse_config(
        {
            "providers": {"local": {"type": "file"}},
            "client": {"max_in_flight": 1, "max_queue": 1, "queue_timeout": "1s"},
        }
    )
    kv = KeyVault(config, providers={"local": store})
    assert kv.limiter("api/key").settings == LimitSettings(1, 1, 1.0)
    vendor.state.delay = 3.0  # the one slot stays taken longer than queue_timeout
    client = kv.client("api/key", base_url=vendor.url)
    errors: list[Exception] = []

    def call() -> None:
        try:
            client.get("/v1/models")
        except Exception as exc:
            errors.append(exc)

    first = threading.Thread(target=call)
    first.start()
    wait_until(lambda: vendor.state.in_flight == 1)
    second = threading.Thread(target=call)  # waits in line, then times out
    second.start()
    wait_until(lambda: kv.limiter("api/key").queued == 1)
    with pytest.raises(QueueFullError) as full:
        client.get("/v1/models")  # the line is full: refused at once
    assert type(full.value) is QueueFullError
    second.join()
    first.join()
    assert [type(e) for e in errors] == [QueueTimeoutError]
    assert vendor.state.requests == 1


def test_httpx_limits_still_mean_the_connection_pool(kv: KeyVault, slow_key: str) -> None:
    """``limits=`` is httpx's connection-pool option and passes through; the key's limit is
    ``key_limits=``."""
    import httpx

    client = kv.client("api/key", limits=httpx.Limits(max_connections=2))
    pool = client._transport._pool  # httpx's own pool, built from its limits
    assert pool._max_connections == 2
    kv.client("api/key", key_limits=LimitSettings(max_in_flight=5))  # the config's: accepted
    with pytest.raises(ConfigError, match="one key has one limit"):
        kv.client("api/key", key_limits=LimitSettings(max_in_flight=2))


def test_one_key_has_one_limit(kv: KeyVault) -> None:
    kv.limiter("api/key", LimitSettings(max_in_flight=3))
    assert kv.limiter("api/key").settings.max_in_flight == 3
    with pytest.raises(ConfigError, match="one key has one limit"):
        kv.limiter("api/key", LimitSettings(max_in_flight=4))


def test_a_429_with_retry_after_pauses_every_sender_of_the_key(
    kv: KeyVault, vendor: VendorAPI, slow_key: str
) -> None:
    import prometheus_client

    def pauses() -> float:
        value = prometheus_client.REGISTRY.get_sample_value(
            "keyvault_client_pauses_total", {"key": "api/key"}
        )
        return value or 0.0

    before = pauses()
    vendor.state.delay = 0
    throttled = kv.client("api/key", base_url=vendor.url)
    throttled.resilience.sleep = lambda seconds: None  # its own retry waits; not measured
    other = kv.client("api/key", base_url=vendor.url)
    waited: list[float] = []
    other.resilience.sleep = waited.append
    vendor.state.script.append((429, {"Retry-After": "30"}))
    assert throttled.get("/v1/models").status_code == 200  # retried after its 30 s
    assert other.get("/v1/models").status_code == 200
    assert len(waited) == 1 and 25 < waited[0] <= 30  # the other client waited it out too
    assert pauses() == before + 1
