"""Which works a bulk action acts on, chosen by filters in the read model.

``workflow cancel --pipeline P --status queued`` asks the results service for every
matching work, with the stream sequence of its last event (``works.seq``) and its status:
each becomes a :class:`~workflow.core.bulk.Seen`, whose write then expects exactly that
head (:mod:`workflow.log.bulk`). The projection is asked ``fresh`` (it has every event
logged when the selection starts), and paged by id (``after_id``), so pages never shift
while works change status under it, and no work is listed twice.

A bulk action never spans every work by accident: it takes ids, or filters that name
at least one pipeline, never neither (:func:`check`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypedDict, cast

from workflow.core.bulk import Seen
from workflow.core.errors import ValidationError
from workflow.results.client import Moment, Results

if TYPE_CHECKING:
    from workflow.core.status import Status

#: Works fetched per request (the service's ``MAX_LIMIT``).
PAGE = 10_000


class Filters(TypedDict, total=False):
    """The filters that select works for a bulk action (every one given must hold;
    lists mean "any of", except ``tags``: works with all of them)."""

    pipeline: str | list[str]
    status: str | list[str]
    user: str
    tags: str | list[str]
    event: int | list[int]
    since: Moment  # created at or after
    until: Moment  # created before


def check(ids: Iterable[str] | None, filters: Filters) -> None:
    """Refuse (ValidationError) a selection that is neither ids nor filters, is both, or
    is filters naming no pipeline (which would mean "every work of every pipeline")."""
    given = {name: value for name, value in filters.items() if value not in (None, [], "")}
    if ids is not None and given:
        raise ValidationError("selection", "give work ids or filters, not both")
    if ids is None and not given:
        raise ValidationError(
            "selection",
            "name the works: give their ids, or filters with a pipeline (e.g. --pipeline P --status queued)",
        )
    if ids is None and not given.get("pipeline"):
        raise ValidationError(
            "pipeline", "a bulk action by filter must name its pipeline(s): it never spans every pipeline by accident"
        )


async def select(results: Results, filters: Filters) -> list[Seen]:
    """Every work matching ``filters`` now, oldest id first, as seen in the read model."""
    check(None, filters)
    query: dict[str, Any] = {name: value for name, value in filters.items() if value not in (None, [], "")}
    seen: list[Seen] = []
    after_id: str | None = None
    while True:
        rows: Any = await results.query(
            **query, fields=["id", "pipeline", "seq", "status"], order="id", limit=PAGE, after_id=after_id,
            fresh=after_id is None,  # the first page waits for every event logged so far; the next need not
        )
        seen.extend(Seen(row["id"], row["pipeline"], row["seq"], cast("Status", row["status"])) for row in rows)
        if len(rows) < PAGE:
            return seen
        after_id = rows[-1]["id"]

