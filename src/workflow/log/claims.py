"""Claiming work: withdraw queue messages from buckets, turn them into started works, and
hold each under a :class:`~workflow.log.leases.Lease` while it runs.

What to do with a delivery is decided by the pure rule in :mod:`workflow.core.claim`;
this module does only the I/O that rule asks for (read the head, record a lost attempt,
publish ``Started`` with the CAS, ``term`` a stale message).

Works are claimed in batches (DESIGN.md, "The fast path"): one pull asks a bucket for as
many messages as the caller has free slots, and the ``Started`` events of the batch are
published concurrently, each still its own CAS, so a batch of n costs about two round
trips instead of 2n. Buckets are asked highest priority first, and a lower one only once
the higher ones came back short (empty), so a batch never takes priority-1 work while
priority-5 work waits.

The two steps are also offered apart, for a worker that overlaps them: :meth:`Claims.fetch`
pulls deliveries (nothing is recorded yet; each is only held for its AckWait),
:meth:`Claims.claim` turns one into a started work, and :meth:`Claims.give_back` returns
one never started (a ``nak``: redelivered at once, nothing recorded, no attempt used).

Before its first pull from a pipeline, the client's :class:`~workflow.log.watch.Watch`
subscribes to its cancels and deposits: a held work is stopped as soon as its cancel is
in the log, and a bucket found empty is asked again as soon as work is queued in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from workflow.core import events as ev
from workflow.core.claim import (
    CheckClaimer,
    Decision,
    Defer,
    Delivery,
    Head,
    RecordLost,
    Skip,
    Stale,
    Start,
    decide,
    decide_on_head,
)
from workflow.core.errors import ConflictError
from workflow.core.subjects import BucketKey
from workflow.core.work import Work, amend, validate_field
from workflow.log.buckets import Buckets
from workflow.log.claimer_keys import Heartbeats
from workflow.log.gateway import LogGateway
from workflow.log.leases import Lease, Leases
from workflow.log.watch import Watch

__all__ = ["Claims", "Delivered", "Lease", "Leases"]

log = logging.getLogger("workflow.client")

Queued = ev.Deposited | ev.Requeued


@dataclass(frozen=True, eq=False)
class Delivered:
    """A queue message a bucket handed over and nobody has started yet."""

    key: BucketKey
    msg: Msg
    ack_wait: float  # the bucket's lease: redelivered to another worker unless started within it
    fetched_at: float = field(default_factory=time.monotonic)

    @property
    def priority(self) -> int:
        return self.key.priority

    @property
    def label(self) -> str:
        """Names the delivery in logs and task names."""
        return str(self.msg.reply)


class Claims:
    """Withdraws works from buckets, in batches, each started under its own lease."""

    def __init__(self, gateway: LogGateway, buckets: Buckets, leases: Leases, watch: Watch) -> None:
        self._log = gateway
        self._buckets = buckets
        self._leases = leases
        self._watch = watch
        self.heartbeats = Heartbeats(gateway.nc)  # of filtered claims: the watchdog reads them
        self._rotation = 0

    async def withdraw(
        self,
        pipeline: str | Sequence[str],
        *,
        site: str | None = None,
        priority: int | None = None,
        timeout: float = 0.0,
        poll: float = 0.5,
    ) -> Work | None:
        """The next work of these pipelines, now ``running`` under a lease held here.

        Highest priority first, then oldest deposit (within each bucket). ``site`` and
        ``priority`` narrow the buckets. Waits up to ``timeout`` seconds for one (polling
        every ``poll`` s); None if there is none.
        """
        return await first_within(lambda: self.withdraw_many(pipeline, 1, site=site, priority=priority), timeout, poll)

    async def withdraw_many(
        self, pipeline: str | Sequence[str], limit: int, *, site: str | None = None, priority: int | None = None
    ) -> list[Work]:
        """Up to ``limit`` works of these pipelines, each ``running`` under its own lease,
        highest priority first; an empty list at once if the buckets hold none.

        A stale delivery does not shorten the batch: the buckets are asked again for its
        place until they come back short.
        """
        works: list[Work] = []
        while len(works) < limit:
            wanted = limit - len(works)
            batch = await self.fetch(pipeline, wanted, site=site, priority=priority)
            started = await asyncio.gather(*(self.claim(delivered) for delivered in batch))
            works.extend(work for work in started if work is not None)
            if len(batch) < wanted:
                break  # the buckets are empty
        return works

    async def fetch(
        self, pipeline: str | Sequence[str], limit: int, *, site: str | None = None, priority: int | None = None
    ) -> list[Delivered]:
        """Up to ``limit`` deliveries, highest priority first, none of them started yet:
        one pull per bucket asked, a lower bucket only once the higher ones came back short."""
        pipelines = [pipeline] if isinstance(pipeline, str) else list(pipeline)
        for name in pipelines:
            validate_field("pipeline", name)
        if site is not None:
            validate_field("site", site)
        if priority is not None:
            validate_field("priority", priority)
        await self._watch.pipelines(pipelines)
        fetched: list[Delivered] = []
        for key in self._in_order(await self._buckets.select(pipelines, site, priority)):
            if self._buckets.drained(key):
                continue  # came back short a moment ago, nothing queued in it since
            wanted = limit - len(fetched)
            messages = await self._buckets.fetch(key, wanted)
            for msg in messages:
                owner = self._buckets.key_of(msg.metadata.consumer) or key
                fetched.append(Delivered(owner, msg, self._buckets.ack_wait(owner)))
            if len(fetched) >= limit:
                break
        return fetched

    async def give_back(self, delivered: Delivered) -> None:
        """Return a delivery that was never started: redelivered at once, nothing recorded."""
        self._buckets.refilled(delivered.key)
        with contextlib.suppress(Exception):
            await delivered.msg.nak()

    def _in_order(self, keys: list[BucketKey]) -> list[BucketKey]:
        """Highest priority first; equal priorities in a rotating order, so no bucket
        starves another."""
        self._rotation += 1
        by_priority: dict[int, list[BucketKey]] = {}
        for key in keys:
            by_priority.setdefault(key.priority, []).append(key)
        ordered: list[BucketKey] = []
        for prio in sorted(by_priority, reverse=True):
            group = by_priority[prio]
            shift = self._rotation % len(group)
            ordered += group[shift:] + group[:shift]
        return ordered

    async def claim(self, delivered: Delivered) -> Work | None:
        """Turn a delivered queue message into a started work (its ``Started`` published
        with the CAS the pure :func:`~workflow.core.claim.decide` asks for), or discard it
        as stale, or send it away while a live filtered claimer holds its work (the bucket
        as watchdog: see :mod:`workflow.core.claim`); None unless started."""
        key, msg = delivered.key, delivered.msg
        try:
            queued = ev.decode(msg.data)
        except Exception:
            queued = None
        if not isinstance(queued, Queued):
            await msg.term()  # not a queue event: nothing could ever start from it
            return None
        meta = msg.metadata
        work = queued.work
        delivery = Delivery(
            meta.num_delivered, meta.sequence.stream, work.attempt, work.retries, work.timeout, delivered.ack_wait
        )
        head = await self._read_head(queued) if delivery.needs_head else None
        decision = decide(delivery, head)
        if isinstance(decision, CheckClaimer | RecordLost):
            decision = await self._settle(queued, delivery, head, decision)
        if isinstance(decision, Start):
            started = await self._start(key, msg, queued, decision)
            if started is not None or not decision.recheck_on_conflict:
                return started
            # A refused first start: the work changed. Stale, unless a filter claimed it,
            # which leaves this message as its watchdog: decide again on the head.
            head = await self._read_head(queued)
            decision = await self._settle(queued, delivery, head, decide_on_head(delivery, head))
            if isinstance(decision, Start):
                return await self._start(key, msg, queued, decision)
        if isinstance(decision, Stale):
            await msg.term()
        elif isinstance(decision, Defer):
            log.debug("%s: %s; looking again in %.1fs", queued.work_id, decision.why, decision.delay)
            with contextlib.suppress(Exception):
                await msg.nak(delay=decision.delay)
        return None

    async def _read_head(self, queued: Queued) -> Head | None:
        record = await self._log.head(queued.work_id, queued.pipeline)
        return None if record is None else Head(record.seq, record.event)

    async def _settle(self, queued: Queued, delivery: Delivery, head: Head | None, decision: Decision) -> Decision:
        """Do the I/O a decision asks before it can act: read a filtered claimer's
        heartbeat (then decide again), record a lost attempt (then start or discard)."""
        if isinstance(decision, CheckClaimer):
            started = decision.started
            alive = await self.heartbeats.alive(queued.work_id, started.by, started.attempt)
            decision = decide_on_head(delivery, head, claimer_alive=alive, now=time.time())
            if isinstance(decision, CheckClaimer):  # the bucket cannot be read: look again after a lease
                return Defer(delivery.lease, "the filtered claimer's heartbeat could not be read")
        if isinstance(decision, RecordLost):
            return await self._record_lost(queued, decision)
        return decision

    async def _record_lost(self, queued: Queued, lost: RecordLost) -> Start | Stale | Skip:
        """Record that the previous attempt of this chain was lost; what to do next."""
        failed = lost.failed(queued.work_id, queued.pipeline, by=self._log.name, now=time.time())
        try:
            failed_seq = await self._log.append(failed, lost.expected_seq)
        except ConflictError:
            return Skip("the work changed while its lost attempt was being recorded")
        return lost.after(failed_seq)

    async def _start(self, key: BucketKey, msg: Msg, queued: Queued, start: Start) -> Work | None:
        """Publish ``Started`` with the CAS; on success the work is held under a new lease."""
        started = ev.Started(
            **self._log.envelope(queued.work_id, queued.pipeline),
            attempt=start.attempt, queue_seq=msg.metadata.sequence.stream, host=self._log.name.rsplit(":", 1)[0],
        )
        try:
            head_seq = await self._log.append(started, start.expected_seq)
        except ConflictError:
            return None  # the work changed meanwhile (the caller decides again if it may)
        running = amend(  # values the decoded Queued and our own Started already checked
            queued.work, id=queued.work_id, status="running", attempt=started.attempt, start=started.time, stop=None
        )
        work = copy.copy(running)  # the caller's to change; the lease keeps its own
        self._leases.add(Lease(
            work_id=queued.work_id, work=work, running=running, msg=msg, bucket=key,
            queue_seq=started.queue_seq, head_seq=head_seq, base_attempt=queued.work.attempt,
            ack_wait=self._buckets.ack_wait(key),
        ))
        return work


async def first_within(
    take: Callable[[], Awaitable[list[Work]]], timeout: float, poll: float
) -> Work | None:
    """The first work ``take()`` gives, asked every ``poll`` s for up to ``timeout`` s
    (at least once); None if none came. One withdraw loop for bucket and filtered claims."""
    deadline = time.monotonic() + timeout
    while True:
        works = await take()
        if works or time.monotonic() >= deadline:
            return works[0] if works else None
        await asyncio.sleep(min(poll, max(deadline - time.monotonic(), 0)))
