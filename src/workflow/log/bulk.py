"""Cancel, re-queue or delete many works at once, each with its own CAS'd event.

The works come as :class:`~workflow.core.bulk.Seen`: each with the head (stream sequence)
and status it had when it was selected, from the read model (``client.cancel_many(pipeline=…)``,
:mod:`workflow.api`) or from the log's heads (ids given by hand, :meth:`Bulk.seen`). Each
work's first write expects exactly that head, so a work that changed since it was seen
(a worker started it, someone else cancelled it) is skipped and counted in the report's
``changed``, never acted on for a state it no longer has. Nothing is retried: "the works
that were queued when I looked" is what the operator asked for.

Writes run concurrently (``concurrency`` at a time: each is one request and its ack, so
a thousand works take well under a second on one server); if the log refuses a write
for any other reason (permissions, the server gone), the whole run stops with that error
and the works not yet written are left as they were.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from workflow.core import events as ev
from workflow.core.bulk import Action, BulkReport, Seen, Step, status_after, steps
from workflow.core.errors import ConflictError
from workflow.core.fold import fold
from workflow.log.gateway import LogGateway
from workflow.log.operations import Operations

#: Appends in flight at once.
CONCURRENCY = 32


class Bulk:
    """Bulk operator actions over one connection (``client.bulk``)."""

    def __init__(self, gateway: LogGateway, operations: Operations, concurrency: int = CONCURRENCY) -> None:
        self._log = gateway
        self._operations = operations
        self._slots = asyncio.Semaphore(concurrency)

    async def seen(self, ids: Iterable[str]) -> tuple[list[Seen], list[str]]:
        """The works named by ``ids`` as their heads show them now, and the ids of none.
        (Duplicates count once.)"""
        unique = list(dict.fromkeys(ids))

        async def head(work_id: str) -> Seen | None:
            async with self._slots:
                found = await self._log.head(work_id)
            if found is None:
                return None
            return Seen(work_id, found.event.pipeline, found.seq, status_after(found.event))

        heads = await asyncio.gather(*(head(work_id) for work_id in unique))
        return [h for h in heads if h is not None], [i for i, h in zip(unique, heads, strict=True) if h is None]

    async def by_ids(
        self, action: Action, ids: Iterable[str], *, reason: str | None = None, priority: int | None = None,
        site: str | None = None,
    ) -> BulkReport:
        """``action`` on each work named by id (read at its head now)."""
        works, missing = await self.seen(ids)
        report = await self.apply(action, works, reason=reason, priority=priority, site=site)
        report.missing.extend(missing)
        return report

    async def apply(
        self, action: Action, works: Sequence[Seen], *, reason: str | None = None, priority: int | None = None,
        site: str | None = None, progress: Callable[[int], object] | None = None,
    ) -> BulkReport:
        """``action`` on each of ``works``, each against the head it was seen at.

        ``progress``, if given, is called with how many works are through so far (acted
        on, skipped or refused) each time one is: a long run (the TUI's bulk action) can
        say how far it is."""
        through = 0

        async def one(work: Seen) -> str | None:
            nonlocal through
            try:
                return await attempt(work)
            finally:
                through += 1
                if progress is not None:
                    progress(through)

        async def attempt(work: Seen) -> str | None:
            plan = steps(action, work.status)
            if isinstance(plan, str):
                return plan
            async with self._slots:
                try:
                    seq = work.seq
                    for step in plan:
                        seq = await self._append(step, work, seq, reason=reason, priority=priority, site=site)
                except ConflictError:
                    return _CHANGED
            return None

        try:
            async with asyncio.TaskGroup() as group:  # an unexpected error stops every write still to come
                tasks = [group.create_task(one(work)) for work in works]
        except BaseExceptionGroup as stopped:  # the error that stopped the run, as the docstring promises
            raise _first(stopped) from None
        report = BulkReport(action)
        for work, task in zip(works, tasks, strict=True):
            outcome = task.result()
            if outcome is None:
                report.done.append(work.work_id)
            elif outcome is _CHANGED:
                report.changed.append(work.work_id)
            else:
                report.refused[work.work_id] = outcome
        return report

    async def _append(
        self, step: Step, work: Seen, seq: int, *, reason: str | None, priority: int | None, site: str | None
    ) -> int:
        """Append one step's event at ``seq`` (ConflictError if the work moved); its sequence."""
        envelope = self._log.envelope(work.work_id, work.pipeline)
        if step == "cancelled":
            seq = await self._log.append(ev.Cancelled(**envelope, reason=reason), seq)
            await self._operations.stop_held(work.work_id)
            return seq
        if step == "deleted":
            return await self._log.append(ev.Deleted(**envelope, reason=reason), seq)
        # A Requeued carries the whole work: fold it from the log (exact), not from the read model.
        records = await self._log.history_records(work.work_id, work.pipeline)
        if not records or records[-1].seq != seq:
            raise ConflictError(f"work {work.work_id} changed since it was seen")
        state = fold((r.event for r in records), skip_refused=True)
        assert state is not None
        await self._operations.requeue_state(state, seq, priority=priority, site=site, reason=reason)
        return seq


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a stopped run, not the group the TaskGroup wraps it in: a refused
    permission stops every write the same way, and a caller (the CLI's exit codes, a
    script's ``except PermissionDeniedError``) must meet the error itself."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        error = stack.pop(0)
        if isinstance(error, BaseExceptionGroup):
            stack[:0] = error.exceptions
        else:
            leaves.append(error)
    return next((e for e in leaves if not isinstance(e, asyncio.CancelledError)), leaves[0])


#: The outcome of a work whose CAS was refused (compared by identity).
_CHANGED = "changed meanwhile"
