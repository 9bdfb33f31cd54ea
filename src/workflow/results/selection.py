"""Which works a bulk action acts on, chosen by filters in the read model.

``workflow cancel --pipeline P --status queued`` asks the results service for every
matching work, with the stream sequence of its last event (``works.seq``) and its status:
each becomes a :class:`~workflow.core.bulk.Seen`, whose write then expects exactly that
head (:mod:`workflow.log.bulk`). The projection is asked ``fresh`` (it has every event
logged when the selection starts), and paged by id (``after_id``), so pages never shift
while works change status under it, and no work is listed twice.

The filters are the core's :class:`~workflow.core.filters.WorkFilter`, as for any search.
A bulk action never spans every work by accident: it takes ids, or filters that name
at least one pipeline, never neither (:func:`check`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import msgspec

from workflow.core.bulk import Seen
from workflow.core.errors import ValidationError
from workflow.core.filters import WorkFilter
from workflow.results.client import Results

if TYPE_CHECKING:
    from workflow.core.status import Status

#: Works fetched per request (the service's ``MAX_LIMIT``).
PAGE = 10_000


def check(ids: Iterable[str] | None, filters: WorkFilter) -> None:
    """Refuse (ValidationError) a selection that is neither ids nor filters, is both, or
    is filters naming no pipeline (which would mean "every work of every pipeline")."""
    if ids is not None and filters:
        raise ValidationError("selection", "give work ids or filters, not both")
    if ids is None and not filters:
        raise ValidationError(
            "selection",
            "name the works: give their ids, or filters with a pipeline (e.g. --pipeline P --status queued)",
        )
    if ids is None and not filters.pipeline:
        raise ValidationError(
            "pipeline", "a bulk action by filter must name its pipeline(s): it never spans every pipeline by accident"
        )


async def select(results: Results, filters: WorkFilter) -> list[Seen]:
    """Every work matching ``filters`` now, oldest id first, as seen in the read model."""
    check(None, filters)
    seen: list[Seen] = []
    page = filters
    while True:
        rows: Any = await results.query(
            page, fields=["id", "pipeline", "seq", "status"], order="id", limit=PAGE,
            fresh=page is filters,  # the first page waits for every event logged so far; the next need not
        )
        seen.extend(Seen(row["id"], row["pipeline"], row["seq"], cast("Status", row["status"])) for row in rows)
        if len(rows) < PAGE:
            return seen
        page = msgspec.structs.replace(filters, after_id=rows[-1]["id"])
