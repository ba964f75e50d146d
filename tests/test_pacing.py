"""The write pacer, on a fake clock: evenly spaced turns, no burst after idling."""

from __future__ import annotations

import itertools

import pytest

from keyvault.pacing import Pacer


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def turns(pacer: Pacer, time: FakeTime, callers: int) -> list[float]:
    """When each of ``callers`` arriving at the same instant gets to write."""
    at = []
    for _ in range(callers):
        waited = pacer.waited
        pacer.take()
        at.append(time.now + pacer.waited - waited)
    return at


def test_callers_arriving_together_are_spaced_one_interval_apart() -> None:
    time = FakeTime()
    pacer = Pacer(40.0, clock=time.clock, sleep=time.sleep)
    at = turns(pacer, time, 100)
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert gaps == pytest.approx([1 / 40] * 99)
    # any one-second window holds at most 40 writes (the quota is 50)
    assert max(sum(1 for t in at if start <= t < start + 1.0 - 1e-9) for start in at) == 40
    assert pacer.waited == pytest.approx(sum(at) - 100 * time.now)


def test_idling_does_not_save_up_a_burst() -> None:
    time = FakeTime()
    pacer = Pacer(10.0, clock=time.clock, sleep=time.sleep)
    time.now += 3600  # an hour with no writes
    at = turns(pacer, time, 3)
    assert [t - time.now for t in at] == pytest.approx([0.0, 0.1, 0.2])


def test_no_rate_never_waits_and_a_bad_rate_is_refused() -> None:
    time = FakeTime()
    pacer = Pacer(None, clock=time.clock, sleep=time.sleep)
    for _ in range(1000):
        pacer.take()
    assert time.sleeps == [] and pacer.waited == 0
    with pytest.raises(ValueError, match="above 0"):
        Pacer(0.0)
