"""Leases: the works a client holds, kept alive by one heartbeat for all of them.

A held work's queue message gets ``in_progress`` at least every third of its bucket's
AckWait, so it is never handed to another worker while this process lives. One timer
beats every held message (a publish each, never awaited one by one), instead of a task
per work: a worker holding many short works pays for none of them, and one holding a few
long ones pays a few publishes per lease window.

Cancels do not need the heartbeat: they arrive as events the client subscribes to (see
:mod:`workflow.log.claims`). The heartbeat still reads the head of a work held longer than
a whole lease window, once per window, so a hand-over that no event announced to us (our
lease expired during a long network outage and another worker started the work) is
noticed too; short works never cost that read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from workflow.core import events as ev
from workflow.core.errors import ConflictError
from workflow.core.subjects import BucketKey
from workflow.core.work import Work
from workflow.log.gateway import LogGateway

log = logging.getLogger("workflow.client")

#: The shortest pause between two heartbeat ticks, whatever the leases say.
MIN_TICK = 0.05


class Holding(Protocol):
    """What a lease holds its work by: the queue message a bucket delivered (a nats-py
    ``Msg``), or, for a filtered claim, its heartbeat key
    (:class:`workflow.log.claimer_keys.HeartbeatTicket`). The heartbeat renews it; an
    outcome ends it (``ack`` done, ``nak`` retry later, ``term`` never again)."""

    async def in_progress(self) -> None: ...

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None: ...

    async def term(self) -> None: ...


@dataclass(eq=False)
class Lease:
    """A withdrawn work held by this client: its queue message (or, claimed by filter,
    its heartbeat key) and the last event seen.

    ``work`` is the object handed to the caller (who may change it before reporting);
    ``running`` is the lease's own copy of the state the ``Started`` event made, which the
    outcome is folded onto.
    """

    work_id: str
    work: Work
    running: Work
    msg: Holding
    bucket: BucketKey
    queue_seq: int
    head_seq: int
    base_attempt: int
    ack_wait: float
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    lost_reason: str | None = None
    beaten_at: float = field(default_factory=time.monotonic)
    checked_at: float = field(default_factory=time.monotonic)

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
    """The works this client holds, by id, and the one heartbeat that keeps them."""

    def __init__(self, gateway: LogGateway) -> None:
        self._log = gateway
        self._held: dict[str, Lease] = {}
        self._timer: asyncio.Task[None] | None = None

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
        """Hold a lease; the heartbeat starts with the first one."""
        self._held[lease.work_id] = lease
        if self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._beat(), name="leases-heartbeat")

    def drop(self, lease: Lease) -> None:
        """Forget a lease (its message is no longer beaten)."""
        if self._held.get(lease.work_id) is lease:
            del self._held[lease.work_id]

    def lose(self, work_id: str, reason: str) -> Lease | None:
        """Stop a held work (cancelled, handed on) and forget it; the lease, if held."""
        lease = self._held.get(work_id)
        if lease is not None:
            lease.lose(reason)
            self.drop(lease)
        return lease

    async def close(self) -> None:
        """Stop the heartbeat (the client is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._timer
            self._timer = None

    async def _beat(self) -> None:
        """Beat every lease that is due, until none is held (then the timer ends)."""
        while self._held:
            tick = min(lease.ack_wait for lease in self._held.values()) / 6
            await asyncio.sleep(max(tick, MIN_TICK))
            now = time.monotonic()
            for lease in list(self._held.values()):
                if now - lease.beaten_at >= lease.ack_wait / 3 - tick:
                    lease.beaten_at = now
                    try:
                        await lease.msg.in_progress()  # a publish: buffered, not awaited on the server
                    except Exception as error:  # NATS away: keep trying; the lease may still hold
                        log.warning("heartbeat of %s failed: %r", lease.work_id, error)
            due = [lease for lease in self._held.values() if now - lease.checked_at >= lease.ack_wait]
            if due:
                await asyncio.gather(*(self._check(lease, now) for lease in due))

    async def _check(self, lease: Lease, now: float) -> None:
        """Read a long-held work's head: if anything happened to it, it is not ours."""
        lease.checked_at = now
        try:
            head = await self._log.head(lease.work_id, lease.running.pipeline)
        except Exception as error:
            log.warning("checking the head of %s failed: %r", lease.work_id, error)
            return
        if head is not None and head.seq != lease.head_seq and self._held.get(lease.work_id) is lease:
            cancelled = isinstance(head.event, ev.Cancelled)
            if cancelled:
                with contextlib.suppress(Exception):
                    await lease.msg.term()
            self.lose(lease.work_id, "cancelled" if cancelled else f"superseded by {type(head.event).__name__}")
