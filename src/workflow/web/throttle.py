"""A limit on failed logins: guessing passwords through the web UI is slow on purpose.

bcrypt makes each guess cost the server ~50 ms, which slows a guesser but does not stop
one. So failed logins are counted per *user name* (the one typed, known or not) and per
*address* (the browser's, as uvicorn sees it: behind a reverse proxy on this host, the
``X-Forwarded-For`` it sends): after ``per_user`` failures for a name, or ``per_address``
from an address, within ``window`` seconds, further attempts for that name or from that
address are refused for ``lockout`` seconds (HTTP 429 with ``Retry-After``), before any
password is checked, so a refused guess costs no bcrypt either.

The counts live in this process's memory only, like the sessions (:mod:`workflow.web.users`):
nothing to store or share, and a restart of the web process clears them (the way out for an
operator whose user a guesser locked). Memory stays bounded whatever the guesser sends:
at most :data:`MAX_TRACKED` names and as many addresses are followed, expired ones dropped
first. A lock per name lets anyone lock a user out for ``lockout`` seconds by failing on
purpose; that is the price of stopping a guesser who spreads over many addresses, and
why the lock is minutes, not forever.

Pure: the clock is a parameter, so the rules are tested without waiting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Names (and addresses) followed at most.
MAX_TRACKED = 10_000


@dataclass(frozen=True)
class LoginLimits:
    """How many failed logins are allowed, within how long, and how long a lock lasts (s)."""

    per_user: int = 5
    per_address: int = 20
    window: float = 900.0
    lockout: float = 900.0


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)  # failures within the window, oldest first
    locked_until: float = 0.0


@dataclass(frozen=True)
class Refusal:
    """Why a login is refused now, and for how many more seconds."""

    who: str  # "user" or "address"
    retry_after: int

    def message(self, user: str) -> str:
        whom = f"for {user}" if self.who == "user" else "from your address"
        return (f"too many failed logins {whom}: logins are refused for {_minutes(self.retry_after)}; "
                "try again then")


class LoginThrottle:
    """Counts failed logins per name and per address; says when to refuse."""

    def __init__(self, limits: LoginLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or LoginLimits()
        self._clock = clock
        self._users: dict[str, _Failures] = {}
        self._addresses: dict[str, _Failures] = {}

    def refused(self, user: str, address: str) -> Refusal | None:
        """A Refusal if logins for ``user`` or from ``address`` are locked now, else None."""
        now = self._clock()
        for who, table, key in (("user", self._users, user), ("address", self._addresses, address)):
            failures = table.get(key)
            if failures is not None and failures.locked_until > now:
                return Refusal(who, max(1, math.ceil(failures.locked_until - now)))
        return None

    def failed(self, user: str, address: str) -> Refusal | None:
        """Count a failed login; the Refusal if it locked the name or the address."""
        now = self._clock()
        locked = None
        for who, table, key, limit in (("user", self._users, user, self.limits.per_user),
                                       ("address", self._addresses, address, self.limits.per_address)):
            failures = self._entry(table, key, now)
            failures.times = [t for t in failures.times if t > now - self.limits.window]
            failures.times.append(now)
            if len(failures.times) >= limit:
                failures.times.clear()
                failures.locked_until = now + self.limits.lockout
                locked = locked or Refusal(who, math.ceil(self.limits.lockout))
        return locked

    def succeeded(self, user: str) -> None:
        """A login succeeded: the name's earlier failures are forgiven (its address's are not)."""
        self._users.pop(user, None)

    @property
    def tracked(self) -> int:
        """Names and addresses followed now (the tests check it stays bounded)."""
        return len(self._users) + len(self._addresses)

    def _entry(self, table: dict[str, _Failures], key: str, now: float) -> _Failures:
        failures = table.get(key)
        if failures is None:
            if len(table) >= MAX_TRACKED:
                self._forget(table, now)
            failures = table[key] = _Failures()
        return failures

    def _forget(self, table: dict[str, _Failures], now: float) -> None:
        """Make room: drop what no longer counts, else the oldest followed (dicts keep insertion order)."""
        stale = [key for key, f in table.items()
                 if f.locked_until <= now and all(t <= now - self.limits.window for t in f.times)]
        for key in stale:
            del table[key]
        while len(table) >= MAX_TRACKED:
            del table[next(iter(table))]


def _minutes(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{math.ceil(seconds / 60)} min"
