"""What operators do to works from outside: cancel, re-queue, and look at the buckets.

Both writes are CAS appends against the head the operator just read, so they never race a
worker silently: a cancel that loses a race looks again; a re-queue of a running work is
refused. The old queue message of a cancelled or re-queued work becomes stale, and the
next worker it reaches terms it (see :mod:`workflow.core.claim`).
"""

from __future__ import annotations

import contextlib

import msgspec

from workflow.core import events as ev
from workflow.core.errors import ConflictError, NotFoundError
from workflow.core.fold import fold
from workflow.core.subjects import BucketKey
from workflow.core.work import Work
from workflow.log.buckets import Buckets, BucketStats
from workflow.log.claims import Leases
from workflow.log.gateway import LogGateway

#: How many times a cancel re-reads a work that keeps changing under it.
CANCEL_TRIES = 10


class Operations:
    """Operator actions on any work, held here or not."""

    def __init__(self, gateway: LogGateway, buckets: Buckets, leases: Leases) -> None:
        self._log = gateway
        self._buckets = buckets
        self._leases = leases

    async def buckets(self) -> list[BucketStats]:
        """Every bucket with how many works wait in it and how many are held by workers."""
        return await self._buckets.stats()

    async def cancel(self, work_id: str, reason: str | None = None) -> ev.Cancelled:
        """Cancel a work: a queued work never runs; a running one is stopped at its next
        heartbeat. Raises ConflictError if it already finished, NotFoundError if unknown."""
        for _ in range(CANCEL_TRIES):
            head = await self._log.head(work_id)
            if head is None:
                raise NotFoundError(f"no work with id {work_id}")
            if ev.is_final(head.event):
                raise ConflictError(
                    f"work {work_id} has already finished ({type(head.event).__name__}); nothing to cancel"
                )
            event = ev.Cancelled(**self._log.envelope(work_id, head.event.pipeline), reason=reason)
            try:
                await self._log.append(event, head.seq)
            except ConflictError:
                continue  # something happened meanwhile: look again
            lease = self._leases.get(work_id)
            if lease is not None:  # held here: stop it now rather than at the next heartbeat
                lease.lose("cancelled")
                self._leases.drop(lease)
                with contextlib.suppress(Exception):
                    await lease.msg.term()
            return event
        raise ConflictError(f"work {work_id} kept changing; cancel not recorded")

    async def requeue(
        self, work_id: str, *, priority: int | None = None, site: str | None = None, reason: str | None = None
    ) -> Work:
        """Put a queued or finished work (back) in a bucket, optionally at a new priority or
        site: re-prioritising, or retrying a failed or cancelled work by hand. A running work
        is refused (cancel it first). The old queue message becomes stale."""
        records = await self._log.history_records(work_id)
        if not records:
            raise NotFoundError(f"no work with id {work_id}")
        state = fold((r.event for r in records), skip_refused=True)
        assert state is not None
        if state.status == "running":
            raise ConflictError(f"work {work_id} is running; cancel it before re-queueing")
        snapshot = msgspec.structs.replace(
            state, status="queued", start=None, stop=None,
            results=None if state.finished else state.results,
            priority=priority if priority is not None else state.priority,
            site=site if site is not None else state.site,
        )
        await self._buckets.ensure(BucketKey(snapshot.pipeline, snapshot.site, snapshot.priority))
        event = ev.Requeued(**self._log.envelope(work_id, state.pipeline), work=snapshot, reason=reason)
        await self._log.append(event, records[-1].seq)
        return snapshot
