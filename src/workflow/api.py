"""The client users hold: the log's client with the read model's questions attached.

``workflow.connect()`` returns this :class:`Client`. The log layer's client knows nothing
of the read model (it sits below it); this top-level module joins the two, so
``client.results.query(...)`` reads as one object while the layers stay one-way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Unpack

from workflow.archive.products import Products
from workflow.core import events as ev
from workflow.core import session
from workflow.core.bulk import Action, BulkReport, Seen
from workflow.core.errors import WorkflowError
from workflow.core.filters import FilterValues, SelectionValues, WorkFilter
from workflow.core.subjects import BucketKey
from workflow.log import client as log_client
from workflow.log.buckets import BucketStats
from workflow.log.filtered import CandidateQuery, Found
from workflow.results import selection
from workflow.results.client import Results
from workflow.results.queries import MAX_LIMIT


class Client(log_client.Client):
    """One connection to the workflow system: the log (deposit, withdraw, cancel, …)
    and the read model (``results``)."""

    def __init__(self, url: str | None = None, *, lease: float | None = None, **nats_options: Any):
        # Filtered withdraws (``withdraw(..., tags=…)``, ``workflow run --tag``) find their
        # candidates in the read model: see :mod:`workflow.log.filtered`.
        nats_options.setdefault("candidate_finder", self._find_candidates)
        super().__init__(url, lease=lease, **nats_options)

    async def delete(
        self, work_id: str, reason: str | None = None, *, products: bool = False,
        products_removed: list[str] | None = None,
    ) -> ev.Deleted:
        """Delete a work (see the log client's ``delete``); with ``products=True`` its
        archived files are removed first (every attempt's, from their storages) and the
        ``Deleted`` event records which: nothing is recorded as removed unless it was."""
        if products:
            products_removed = await self.products.remove(work_id)
        return await super().delete(work_id, reason, products_removed=products_removed)

    @property
    def products(self) -> Products:
        """A work's archived products and plots: ``list(id)``, ``download(id, dest)``, ``open(uri)``."""
        return Products(self)

    @property
    def results(self) -> Results:
        """Queries over the projection (query, count, pipelines, get, history): the results service."""
        return Results(self)

    async def _find_candidates(self, query: CandidateQuery) -> list[Found]:
        return await find_candidates(self.results, query)

    async def buckets(self) -> list[BucketStats]:
        """Every bucket with its consumer's counts and, as ``waiting``, the works queued in
        it by the read model, caught up with the log first: what can run (None where no
        results service answers)."""
        stats = await super().buckets()
        try:
            queued = await self.results.queued(fresh=True)
        except WorkflowError:  # no results service (yet): the consumers' counts alone
            return stats
        return [dataclasses.replace(s, waiting=queued.get(BucketKey(s.pipeline, s.site, s.priority), 0)) for s in stats]

    # -- many works at once: selected in the read model, each written with its own CAS --

    async def select(self, where: WorkFilter | None = None, /, **filters: Unpack[FilterValues]) -> list[Seen]:
        """Every work matching ``where`` or the filter keywords (which must name a pipeline)
        as the read model has it now: what a bulk action would act on
        (``client.bulk.apply(action, seen)``)."""
        return await selection.select(self.results, WorkFilter.either(where, filters))

    async def cancel_many(
        self, ids: Iterable[str] | WorkFilter | None = None, *, reason: str | None = None,
        **filters: Unpack[SelectionValues],
    ) -> BulkReport:
        """Cancel the works named by ``ids``, or every work matching the filters (keywords,
        e.g. ``pipeline="p", status="queued"``, or a WorkFilter in place of ``ids``): each
        its own ``Cancelled`` against the head it was seen at; one that changed meanwhile is
        skipped and counted (``report.changed``).

        Example: ``(await client.cancel_many(pipeline="p", status="queued")).summary()``
        """
        return await self._many("cancel", ids, filters, reason=reason)

    async def requeue_many(
        self, ids: Iterable[str] | WorkFilter | None = None, *, priority: int | None = None, site: str | None = None,
        reason: str | None = None, **filters: Unpack[SelectionValues],
    ) -> BulkReport:
        """Re-queue the works named by ``ids``, or every work matching the filters (e.g.
        ``pipeline="p", status="failure"``), at a new ``priority``/``site`` if given (to
        select by site or priority, pass a WorkFilter)."""
        return await self._many("requeue", ids, filters, reason=reason, priority=priority, site=site)

    async def delete_many(
        self, ids: Iterable[str] | WorkFilter | None = None, *, reason: str | None = None,
        **filters: Unpack[SelectionValues],
    ) -> BulkReport:
        """Delete the works named by ``ids``, or every work matching the filters: hidden
        from lists and counts, histories kept; an unfinished one is cancelled first."""
        return await self._many("delete", ids, filters, reason=reason)

    async def _many(self, action: Action, ids: Iterable[str] | WorkFilter | None, filters: SelectionValues,
                    **options: Any) -> BulkReport:
        where = WorkFilter.either(ids if isinstance(ids, WorkFilter) else None, filters)
        ids = None if isinstance(ids, WorkFilter) else ids
        selection.check(ids, where)
        if ids is not None:
            return await self.bulk.by_ids(action, [ids] if isinstance(ids, str) else ids, **options)
        return await self.bulk.apply(action, await selection.select(self.results, where), **options)


async def find_candidates(results: Results, query: CandidateQuery) -> list[Found]:
    """The read model's answer to a filtered withdraw: queued matching works, highest
    priority then oldest, fresh (the projection caught up with the log first), less the
    ones the claimer leaves out for now."""
    limit = min(query.limit + len(query.exclude), MAX_LIMIT)
    rows = await results.queued_matching(query.filters.queued(query.pipelines, query.site, query.priority), limit=limit)
    found = [Found(row["id"], row["pipeline"], row["site"], row["priority"]) for row in rows]
    return [item for item in found if item.work_id not in query.exclude][: query.limit]


def connect(url: str | None = None, **options: Any) -> Client:
    """A client to use as ``async with workflow.connect() as client:``.

    ``url`` defaults to ``WORKFLOW_NATS_URL``, else ``nats://127.0.0.1:4222``. Options:
    ``user``, ``password``, ``token``, ``nkeys_seed``, ``user_credentials`` (creds file),
    ``tls`` (an ``ssl.SSLContext``), ``name``, and ``lease`` (seconds; buckets created by
    this client get it as AckWait).
    """
    return Client(url, **options)


# The seed's shortcuts (`await work.deposit()`) open this client when none is bound.
session.install_factory(Client)
