"""Claiming work: withdraw a queue message from a bucket, turn it into a started work,
and hold it under a :class:`Lease` while it runs.

What to do with a delivery is decided by the pure rule in :mod:`workflow.core.claim`;
this module does only the I/O that rule asks for (read the head, record a lost attempt,
publish ``Started`` with the CAS, ``term`` a stale message).

A held work is heartbeated: its queue message gets ``in_progress`` every third of the
bucket's AckWait, so it is never handed to another worker while this process lives, and
the work's head is read at each beat, so a cancel or a hand-over is noticed within one.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
from nats.aio.msg import Msg

from workflow.core import events as ev
from workflow.core.claim import Delivery, Head, RecordLost, Skip, Stale, Start, decide
from workflow.core.errors import ConflictError
from workflow.core.subjects import BucketKey
from workflow.core.work import Work, validate_field
from workflow.log.buckets import Buckets
from workflow.log.gateway import LogGateway

log = logging.getLogger("workflow.client")

Queued = ev.Deposited | ev.Requeued


@dataclass(eq=False)
class Lease:
    """A withdrawn work held by this client: its queue message and the last event seen.

    ``work`` is the object handed to the caller (who may change it before reporting);
    ``running`` is the lease's own copy of the state the ``Started`` event made, which the
    outcome is folded onto.
    """

    work_id: str
    work: Work
    running: Work
    msg: Msg
    bucket: BucketKey
    queue_seq: int
    head_seq: int
    base_attempt: int
    ack_wait: float
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    lost_reason: str | None = None
    heartbeat: asyncio.Task[None] | None = None

    @property
    def attempt(self) -> int:
        return self.running.attempt

    @property
    def attempts_in_chain(self) -> int:
        """Attempts made since the work was (re)queued: what ``retries`` bounds."""
        return self.running.attempt - self.base_attempt

    def lose(self, reason: str) -> None:
        """Tell whoever runs the work to stop: it was cancelled or handed on."""
        self.lost_reason = reason
        self.lost.set()


class Leases:
    """The works this client holds, by id."""

    def __init__(self) -> None:
        self._held: dict[str, Lease] = {}

    def get(self, work_id: str | None) -> Lease | None:
        return None if work_id is None else self._held.get(work_id)

    def held(self, work: Work) -> Lease:
        """The lease on ``work``; ConflictError if this client does not hold it (any more)."""
        lease = self.get(work.id)
        if lease is None:
            raise ConflictError(f"work {work.id} is not held by this client (never withdrawn here, or lost)")
        return lease

    def all(self) -> list[Lease]:
        return list(self._held.values())

    def add(self, lease: Lease) -> None:
        self._held[lease.work_id] = lease

    def drop(self, lease: Lease) -> None:
        """Forget a lease and stop its heartbeat (unless the heartbeat is the caller)."""
        self._held.pop(lease.work_id, None)
        if lease.heartbeat is not None and lease.heartbeat is not asyncio.current_task():
            lease.heartbeat.cancel()


class Claims:
    """Withdraws works from buckets and keeps their leases alive."""

    def __init__(self, gateway: LogGateway, buckets: Buckets, leases: Leases) -> None:
        self._log = gateway
        self._buckets = buckets
        self._leases = leases
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
        pipelines = [pipeline] if isinstance(pipeline, str) else list(pipeline)
        for name in pipelines:
            validate_field("pipeline", name)
        if site is not None:
            validate_field("site", site)
        if priority is not None:
            validate_field("priority", priority)
        deadline = time.monotonic() + timeout
        while True:
            work = await self._withdraw_once(pipelines, site, priority)
            if work is not None or time.monotonic() >= deadline:
                return work
            await asyncio.sleep(min(poll, max(deadline - time.monotonic(), 0)))

    async def _withdraw_once(self, pipelines: list[str], site: str | None, priority: int | None) -> Work | None:
        keys = await self._buckets.select(pipelines, site, priority)
        # Equal priorities are asked in a rotating order, so no bucket starves another.
        self._rotation += 1
        by_priority: dict[int, list[BucketKey]] = {}
        for key in keys:
            by_priority.setdefault(key.priority, []).append(key)
        for prio in sorted(by_priority, reverse=True):
            group = by_priority[prio]
            shift = self._rotation % len(group)
            for key in group[shift:] + group[:shift]:
                while (msg := await self._buckets.next_message(key)) is not None:
                    work = await self._claim(key, msg)
                    if work is not None:
                        return work
        return None

    async def _claim(self, key: BucketKey, msg: Msg) -> Work | None:
        """Turn a delivered queue message into a started work, or discard it as stale."""
        queued = ev.decode(msg.data)
        if not isinstance(queued, Queued):
            await msg.term()  # not a queue event: nothing could ever start from it
            return None
        meta = msg.metadata
        delivery = Delivery(meta.num_delivered, meta.sequence.stream, queued.work.attempt, queued.work.retries)
        head = None
        if delivery.needs_head:
            record = await self._log.head(queued.work_id, queued.pipeline)
            head = None if record is None else Head(record.seq, record.event)
        decision = decide(delivery, head)
        if isinstance(decision, RecordLost):
            decision = await self._record_lost(queued, decision)
        if isinstance(decision, Start):
            return await self._start(key, msg, queued, decision)
        if isinstance(decision, Stale):
            await msg.term()
        return None

    async def _record_lost(self, queued: Queued, lost: RecordLost) -> Start | Stale | Skip:
        """Record that the previous attempt of this chain was lost; what to do next."""
        failed = ev.Failed(
            **self._log.envelope(queued.work_id, queued.pipeline),
            attempt=lost.attempt, reason="lost", will_retry=lost.will_retry,
            queue_seq=lost.queue_seq, error=lost.error,
        )
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
            if start.stale_on_conflict:
                await msg.term()  # the work changed before its first start: this message is stale
            return None
        running = msgspec.structs.replace(
            queued.work, id=queued.work_id, status="running", attempt=started.attempt, start=started.time, stop=None
        )
        work = copy.copy(running)  # the caller's to change; the lease keeps its own
        lease = Lease(
            work_id=queued.work_id, work=work, running=running, msg=msg, bucket=key,
            queue_seq=started.queue_seq, head_seq=head_seq, base_attempt=queued.work.attempt,
            ack_wait=self._buckets.ack_wait(key),
        )
        lease.heartbeat = asyncio.create_task(self._heartbeat(lease), name=f"lease-{lease.work_id}")
        self._leases.add(lease)
        return work

    async def _heartbeat(self, lease: Lease) -> None:
        """Keep the lease alive; notice a cancel or a hand-over within one beat."""
        interval = max(lease.ack_wait / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                await lease.msg.in_progress()
                head = await self._log.head(lease.work_id, lease.running.pipeline)
            except Exception as error:  # NATS away: keep trying; the lease may still hold
                log.warning("heartbeat of %s failed: %r", lease.work_id, error)
                continue
            if head is not None and head.seq != lease.head_seq:
                cancelled = isinstance(head.event, ev.Cancelled)
                if cancelled:
                    with contextlib.suppress(Exception):
                        await lease.msg.term()
                lease.lose("cancelled" if cancelled else f"superseded by {type(head.event).__name__}")
                self._leases.drop(lease)
                return
