"""What operators do to works from outside: cancel, re-queue, delete, and look at the buckets.

Every write is a CAS append against the head the operator just read, so they never race a
worker silently: a cancel that loses a race looks again; a re-queue of a running work is
refused. The old queue message of a cancelled or re-queued work becomes stale, and the
next worker it reaches terms it (see :mod:`workflow.core.claim`). A delete is an event too
(``Deleted``: the log is immutable), of a finished work only; a delete of an unfinished
one cancels it first (:func:`workflow.core.bulk.steps`). Many works at once:
:mod:`workflow.log.bulk`.
"""

from __future__ import annotations

import contextlib

import msgspec

from workflow.core import events as ev
from workflow.core.bulk import status_after, steps
from workflow.core.errors import ConflictError, NotFoundError
from workflow.core.fold import fold
from workflow.core.subjects import BucketKey
from workflow.core.work import Work, check_site
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
        """Cancel a work: a queued work never runs; a running one is stopped as soon as its
        worker hears the ``Cancelled`` event. Raises ConflictError if it already finished, NotFoundError if unknown."""
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
            await self.stop_held(work_id)
            return event
        raise ConflictError(f"work {work_id} kept changing; cancel not recorded")

    async def stop_held(self, work_id: str) -> None:
        """After a cancel: a work held by this client is stopped now rather than at the next
        heartbeat, and its queue message termed."""
        lease = self._leases.get(work_id)
        if lease is not None:
            lease.lose("cancelled")
            self._leases.drop(lease)
            with contextlib.suppress(Exception):
                await lease.msg.term()

    async def delete(
        self, work_id: str, reason: str | None = None, products_removed: list[str] | None = None,
    ) -> ev.Deleted:
        """Delete a work: lists and counts hide it from now on; its history stays. A work
        not yet finished is cancelled first (a running one is stopped). Raises ConflictError
        if it is already deleted, NotFoundError if unknown."""
        for _ in range(CANCEL_TRIES):
            head = await self._log.head(work_id)
            if head is None:
                raise NotFoundError(f"no work with id {work_id}")
            plan = steps("delete", status_after(head.event))
            if isinstance(plan, str):
                raise ConflictError(f"work {work_id} is {plan}; nothing to delete")
            seq = head.seq
            try:
                if "cancelled" in plan:
                    cancel = ev.Cancelled(**self._log.envelope(work_id, head.event.pipeline), reason=reason)
                    seq = await self._log.append(cancel, seq)
                    await self.stop_held(work_id)
                event = ev.Deleted(**self._log.envelope(work_id, head.event.pipeline), reason=reason,
                                   products_removed=products_removed)
                await self._log.append(event, seq)
            except ConflictError:
                continue  # something happened meanwhile: look again
            return event
        raise ConflictError(f"work {work_id} kept changing; delete not recorded")

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
        refused = steps("requeue", state.status)
        if isinstance(refused, str):
            raise ConflictError(f"work {work_id} is {refused}; not re-queued")
        return await self.requeue_state(state, records[-1].seq, priority=priority, site=site, reason=reason)

    async def requeue_state(
        self, state: Work, seq: int, *, priority: int | None = None, site: str | None = None,
        reason: str | None = None,
    ) -> Work:
        """Append the ``Requeued`` of a work whose state (folded from the log) is ``state``
        at sequence ``seq`` (the CAS): ConflictError if it changed since. A new ``site``
        must be one this host knows, as at deposit (the work's own is not checked again)."""
        assert state.id is not None
        if site is not None:
            check_site(site)
        snapshot = msgspec.structs.replace(
            state, status="queued", start=None, stop=None,
            results=None if state.finished else state.results,
            priority=priority if priority is not None else state.priority,
            site=site if site is not None else state.site,
        )
        await self._buckets.ensure(BucketKey(snapshot.pipeline, snapshot.site, snapshot.priority))
        event = ev.Requeued(**self._log.envelope(state.id, state.pipeline), work=snapshot, reason=reason)
        await self._log.append(event, seq)
        return snapshot
