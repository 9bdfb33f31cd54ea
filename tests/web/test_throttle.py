"""The limit on failed logins, on its own (a clock the test moves: no waiting)."""

from __future__ import annotations

from workflow.web import throttle
from workflow.web.throttle import LoginLimits, LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


LIMITS = LoginLimits(per_user=3, per_address=5, window=60, lockout=120)


def test_a_name_is_locked_after_its_failures_within_the_window_until_the_lockout_ends() -> None:
    clock = Clock()
    limit = LoginThrottle(LIMITS, clock)
    assert limit.failed("ann", "10.0.0.1") is None
    assert limit.failed("ann", "10.0.0.2") is None
    assert limit.refused("ann", "10.0.0.3") is None
    locked = limit.failed("ann", "10.0.0.3")  # the third within 60 s, whatever the address
    assert locked is not None and locked.who == "user" and locked.retry_after == 120
    clock.now += 30
    refusal = limit.refused("ann", "10.0.0.4")
    assert refusal is not None and refusal.retry_after == 90 and "for ann" in refusal.message("ann")
    assert limit.refused("bob", "10.0.0.4") is None  # another name is not locked
    clock.now += 90
    assert limit.refused("ann", "10.0.0.4") is None  # the lockout is over, and its count starts afresh
    assert limit.failed("ann", "10.0.0.4") is None


def test_failures_spread_wider_than_the_window_never_lock() -> None:
    clock = Clock()
    limit = LoginThrottle(LIMITS, clock)
    for _ in range(10):
        assert limit.failed("ann", f"10.0.0.{_}") is None
        clock.now += 31  # two within any 60 s
    assert limit.refused("ann", "10.0.0.99") is None


def test_a_success_forgives_the_names_failures() -> None:
    limit = LoginThrottle(LIMITS, Clock())
    limit.failed("ann", "10.0.0.1")
    limit.failed("ann", "10.0.0.1")
    limit.succeeded("ann")
    assert limit.failed("ann", "10.0.0.1") is None  # the count started again


def test_an_address_trying_many_names_is_locked() -> None:
    clock = Clock()
    limit = LoginThrottle(LIMITS, clock)
    for name in ("a", "b", "c", "d"):
        assert limit.failed(name, "10.0.0.9") is None
    locked = limit.failed("e", "10.0.0.9")
    assert locked is not None and locked.who == "address"
    refusal = limit.refused("someone-else", "10.0.0.9")
    assert refusal is not None and "from your address" in refusal.message("someone-else")
    assert limit.refused("someone-else", "10.0.0.10") is None


def test_memory_stays_bounded_whatever_names_are_tried(monkeypatch) -> None:
    monkeypatch.setattr(throttle, "MAX_TRACKED", 50)
    clock = Clock()
    limit = LoginThrottle(LoginLimits(per_user=3, per_address=10_000, window=60, lockout=120), clock)
    for number in range(500):
        limit.failed(f"name-{number}", "10.0.0.1")
        clock.now += 1
    assert limit.tracked <= 50 + 1  # the names, and the one address
