"""The fold: a work's state is what its events say, applied in order.

``evolve(state, event)`` is pure (no I/O, no clock): the live client, the projector,
a replay and an audit all compute the same state from the same events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from workflow.core.events import (
    AnyEvent,
    Cancelled,
    Deposited,
    Failed,
    Requeued,
    Started,
    Succeeded,
)
from workflow.core.work import Work


class FoldError(ValueError):
    """Raised when an event cannot follow the state it is applied to (a corrupt log)."""


def evolve(state: Work | None, event: AnyEvent) -> Work:
    """The work after ``event``, given the work before it (None before the first)."""
    if isinstance(event, Deposited):
        if state is not None:
            raise FoldError(f"work {event.work_id} deposited twice")
        return msgspec.structs.replace(event.work, id=event.work_id, status="queued")
    if state is None:
        raise FoldError(f"{type(event).__name__} for work {event.work_id} before its deposit")
    replace = msgspec.structs.replace
    match event:
        case Requeued():
            return replace(event.work, id=event.work_id, status="queued", start=None, stop=None)
        case Started():
            return replace(state, status="running", attempt=event.attempt, start=event.time, stop=None)
        case Succeeded():
            return replace(
                state,
                status="success",
                attempt=event.attempt,
                results=event.results,
                products=event.products if event.products is not None else state.products,
                plots=event.plots if event.plots is not None else state.plots,
                stop=event.time,
            )
        case Failed():
            results = failure_results(event.results, event.reason, event.error, event.traceback)
            return replace(
                state,
                status="queued" if event.will_retry else "failure",
                attempt=event.attempt,
                results=results,
                products=event.products if event.products is not None else state.products,
                plots=event.plots if event.plots is not None else state.plots,
                stop=event.time,
            )
        case Cancelled():
            return replace(state, status="cancelled", stop=event.time)
    raise FoldError(f"unknown event {event!r}")


def failure_results(
    results: dict[str, Any] | None, reason: str, error: str | None, traceback: str | None
) -> dict[str, Any]:
    """A failed work's ``results``: what the attempt returned, plus why it failed.

    The one rule for both folds (this one, and the projector's row fold).
    """
    merged = dict(results or {})
    merged["error"] = error
    merged["reason"] = reason
    if traceback:
        merged["traceback"] = traceback
    return merged


def fold(events: Iterable[AnyEvent], state: Work | None = None) -> Work | None:
    """Apply ``events`` in order to ``state``."""
    for event in events:
        state = evolve(state, event)
    return state
