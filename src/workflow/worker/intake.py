"""The intake: deliveries fetched ahead of the worker's slots, and when to ask for more.

Fetching is kept off a slot's critical path (DESIGN.md, "The fast path"): the intake pulls
deliveries in batches (one pull each) and keeps them *ready*, a few beyond the free slots,
so a slot that frees takes the next one at once instead of waiting for a round trip.
Nothing is recorded for a ready delivery: it becomes a work only when its slot publishes
its ``Started`` (see :mod:`workflow.worker.loop`).

Fetching ahead pays only while works are short: a delivery held behind a long work would
keep it from an idle worker. So the intake fetches ahead only once an attempt has ended
within :data:`QUICK`, and stops when one takes longer. A ready delivery is held by this
worker but heartbeated by nobody, so it waits for a slot at most :data:`HOLD` (and never
more than a quarter of its lease); then it is given back untouched (``nak``: delivered
again at once, no attempt used) and fetching ahead stops too.

The intake also decides when to sleep: only when the buckets are empty, until a deposit in
one of them, a retry coming due, or a signal wakes it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from typing import Any, Protocol

from workflow.core.errors import PermissionDeniedError
from workflow.core.work import Work
from workflow.log.claims import Delivered
from workflow.log.client import Client
from workflow.log.filtered import Candidate
from workflow.log.permissions import during
from workflow.worker.config import WorkerConfig

#: What the intake keeps ready: a delivery a bucket handed over, or a candidate a filtered
#: withdraw found (``workflow run --tag``); either becomes a work only when claimed.
Ready = Delivered | Candidate


class Source(Protocol):
    """Where a worker takes works from, in the three steps the intake and the slots use:
    the buckets (:class:`workflow.log.claims.Claims`), or a filtered withdraw
    (:class:`workflow.log.filtered.FilteredClaims`)."""

    async def fetch(self, pipeline: list[str], limit: int, *, site: str | None = None) -> list[Ready]: ...

    async def claim(self, ready: Ready) -> Work | None: ...

    async def give_back(self, ready: Ready) -> None: ...


def source_of(client: Client, config: WorkerConfig) -> Source:
    """The worker's source: its filter's claims if it has a filter, else the buckets."""
    if config.filters:
        return _Adapted(client.filtered(config.filters))
    return _Adapted(client.claims)

log = logging.getLogger("workflow.worker")

#: Pauses (s) before asking empty buckets again after a wake-up (see :meth:`Intake.fetch`).
REWAKE_DELAYS = (0.002, 0.01, 0.05)
#: The longest a fetched delivery waits for a free slot before it is given back (s).
HOLD = 1.0
#: The fewest deliveries kept ready beyond the free slots (more with a higher concurrency).
PREFETCH = 4
#: Attempts that end within this (s) are short: fetching ahead of the slots pays.
QUICK = 0.1


class Intake:
    """Ready deliveries (highest priority, then oldest, first) and the fetching that fills them."""

    def __init__(self, config: WorkerConfig, stop: asyncio.Event) -> None:
        self.config = config
        # Deliveries kept ready beyond the free slots, fetched in batches of at least half
        # of it: one pull per few works even at concurrency 1.
        self.prefetch = max(PREFETCH, config.concurrency)
        self._stop = stop
        self._ready: list[tuple[int, int, Ready]] = []
        self.source: Source | None = None  # set once connected (see source_of)
        self._arrivals = itertools.count()
        self._prefetching = False  # on while attempts end within QUICK (see the module docstring)
        self._wake = asyncio.Event()  # a deposit in one of our buckets, or a retry due
        self._moved = asyncio.Event()  # a slot freed or a claim settled: there may be room
        self._rewakes = 0  # empty fetches since the last wake-up

    def __len__(self) -> int:
        return len(self._ready)

    def room(self, busy: int) -> int:
        """How many deliveries to fetch with ``busy`` slots taken: the free ones plus the
        prefetch; none while the free slots are covered and the prefetch is over half full."""
        uncovered = self.config.concurrency - busy - len(self._ready)
        if not self._prefetching:
            return uncovered
        room = uncovered + self.prefetch
        return room if uncovered > 0 or room >= self.prefetch // 2 else 0

    def pop(self) -> Ready:
        return heapq.heappop(self._ready)[2]

    def moved(self, ran_for: float | None) -> None:
        """A slot freed, after a call of ``ran_for`` seconds (None: nothing ran): fetch
        ahead while calls are short, not after a long one."""
        if ran_for is not None:
            self._prefetching = ran_for < QUICK
        self._moved.set()

    def wake(self) -> None:
        """End a sleep: a deposit in one of our buckets, or a retry due."""
        self._wake.set()

    async def wait_for_room(self) -> None:
        """Wait until a slot or a ready delivery moves (or a hold may have run out)."""
        self._moved.clear()
        await first_of(self._stop.wait(), self._moved.wait(), timeout=HOLD)

    async def fetch(self, client: Client, wanted: int) -> int:
        """Fetch up to ``wanted`` deliveries into the ready heap; how many came.

        An error (NATS away or refusing) tries again after a second; empty buckets after a
        sleep that a deposit, a retry coming due, or a signal ends early (and that a ready
        delivery keeps short, so it is given back in time). A wake-up can outrun the deposit
        it announces into the bucket (the subscriber hears the publish as the stream stores
        it), so empty buckets just after a wake-up are asked again a few times, briefly,
        before the long sleep.
        """
        woken = self._wake.is_set()
        self._wake.clear()
        try:
            fetched = await self._source(client).fetch(self.config.pipelines, wanted, site=self.config.site)
        except Exception as error:
            refusal = error if isinstance(error, PermissionDeniedError) else client.refusal
            if refusal is not None:  # the server refuses this user's pulls: no retry helps
                raise during(refusal, "withdraw") from None
            log.warning("withdraw failed (%s: %s); trying again shortly", type(error).__name__, error)
            await first_of(self._stop.wait(), timeout=1.0)
            return 0
        for delivered in fetched:
            heapq.heappush(self._ready, (-delivered.priority, next(self._arrivals), delivered))
        if fetched:
            self._rewakes = 0
        elif woken and self._rewakes < len(REWAKE_DELAYS):
            await first_of(self._stop.wait(), timeout=REWAKE_DELAYS[self._rewakes])
            self._rewakes += 1
            self._wake.set()
        else:
            self._rewakes = 0
            sleep = HOLD if self._ready else self.config.sleep
            await first_of(self._stop.wait(), self._wake.wait(), timeout=sleep)
        return len(fetched)

    async def expire(self, client: Client) -> None:
        """Give back the ready deliveries that waited too long for a slot; pause prefetching."""
        now = time.monotonic()
        expired = [e for e in self._ready if now - e[2].fetched_at >= min(HOLD, e[2].ack_wait / 4)]
        if expired:
            self._ready = [e for e in self._ready if e not in expired]
            heapq.heapify(self._ready)
            self._prefetching = False
            await _give_back(self._source(client), [e[2] for e in expired])

    async def give_back_all(self, client: Client) -> None:
        """Return every ready delivery (the worker stops taking works)."""
        ready, self._ready = self._ready, []
        await _give_back(self._source(client), [e[2] for e in ready])

    def _source(self, client: Client) -> Source:
        if self.source is None:
            self.source = source_of(client, self.config)
        return self.source


async def _give_back(source: Source, deliveries: list[Ready]) -> None:
    await asyncio.gather(*(source.give_back(delivered) for delivered in deliveries))


class _Adapted:
    """Claims or FilteredClaims as a :class:`Source` (each takes only its own kind)."""

    def __init__(self, claims: Any) -> None:
        self._claims = claims

    async def fetch(self, pipeline: list[str], limit: int, *, site: str | None = None) -> list[Ready]:
        fetched: list[Ready] = await self._claims.fetch(pipeline, limit, site=site)
        return fetched

    async def claim(self, ready: Ready) -> Work | None:
        work: Work | None = await self._claims.claim(ready)
        return work

    async def give_back(self, ready: Ready) -> None:
        await self._claims.give_back(ready)


async def first_of(*waitables: Any, timeout: float | None = None) -> None:
    """Wait until the first of these finishes (or ``timeout``); cancels the coroutines."""
    futures = [asyncio.ensure_future(w) for w in waitables]
    try:
        await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future, original in zip(futures, waitables, strict=True):
            if future is not original:
                future.cancel()
