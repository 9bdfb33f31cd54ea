"""The fold: a work's state is what its events say, applied in order.

``evolve(state, event)`` is pure (no I/O, no clock): the live client, the projector,
a replay and an audit all compute the same state from the same events.

It also holds the work's state machine, and refuses (FoldError) an event the machine
does not allow, rather than trusting the writers' CAS alone: anyone allowed to publish
on ``wf.>`` can append without the CAS headers. The rule (:func:`refusal`):

- nothing before the deposit, and only one deposit;
- an outcome (``Succeeded``, ``Failed``) only while an attempt runs;
- no start of a ``waiting`` work (it is in no bucket: a start could only be forged);
- after a final outcome or a cancel, nothing but a ``Requeued`` (retried by hand) or a
  ``Deleted``: no second final outcome, no start of a finished work;
- a ``Notified`` (the server told someone the work ended) only of a work that ended
  (success, failure, cancelled): it records a message sent, and changes nothing of the work;
- a ``Deleted`` only of a finished work (so no worker can hold a deleted work, and its
  last status is a recorded fact), and after it nothing at all: not even a ``Requeued``,
  since a deleted work is out of every list an operator would retry it from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from workflow.core.errors import FoldError
from workflow.core.events import (
    AnyEvent,
    Cancelled,
    Deleted,
    Deposited,
    Event,
    Failed,
    Notified,
    Requeued,
    Started,
    Succeeded,
)
from workflow.core.status import FINISHED
from workflow.core.work import Work, amend

__all__ = ["FoldError", "evolve", "failure_results", "fold", "refusal"]


def refusal(status: str | None, event: Event | type[Event]) -> str | None:
    """Why the state machine refuses ``event`` for a work in ``status`` (None: no work
    yet); None if it allows it. Shared by both folds (this one, and the projector's)."""
    kind = event if isinstance(event, type) else type(event)
    name = kind.__name__
    if status is None:
        return None if kind is Deposited else f"{name} for a work that was never deposited"
    if kind is Deposited:
        return "a second Deposited for a work that exists"
    if status == "deleted":
        return f"{name} after the work was deleted; nothing may follow a Deleted"
    if kind is Deleted:
        return None if status in FINISHED else f"Deleted while the work is {status}; only a finished work is deleted"
    if kind is Requeued:
        return None
    if kind is Notified:
        return None if status in FINISHED else f"Notified while the work is {status}; only an ended work is told of"
    if status in FINISHED:
        return f"{name} after the work ended ({status}); only a Requeued, a Notified or a Deleted may follow"
    if kind in (Succeeded, Failed) and status != "running":
        return f"{name} while no attempt runs ({status})"
    if kind is Started and status == "waiting":
        return "Started while the work waits (it is in no bucket yet)"
    return None


def evolve(state: Work | None, event: AnyEvent) -> Work:
    """The work after ``event``, given the work before it (None before the first).

    Raises FoldError for an event the work's state machine does not allow (see above).
    """
    refused = refusal(None if state is None else state.status, event)
    if refused is not None:
        raise FoldError(f"work {event.work_id}: {refused}")
    if isinstance(event, Deposited):
        if event.waits is not None:  # a waiting work's ``start`` is the earliest it may start
            return amend(
                event.work, id=event.work_id, status="waiting", start=event.waits.not_before, stop=None
            )
        return amend(event.work, id=event.work_id, status="queued")
    assert state is not None  # refusal() allows only a deposit without a state
    replace = amend  # values from validated events: no second check (see amend)
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
        case Deleted():
            return replace(state, status="deleted")  # the rest as it finished: its history says how
        case Notified():
            return state  # a message sent about the work: the work itself is as it was
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


def fold(events: Iterable[AnyEvent], state: Work | None = None, *, skip_refused: bool = False) -> Work | None:
    """Apply ``events`` in order to ``state``.

    ``skip_refused`` passes over events the state machine refuses, as the projector does
    (it records them as rejected): a history that someone wrote into around the CAS still
    reads as the projection shows it, instead of failing every reader.
    """
    for event in events:
        if skip_refused and refusal(None if state is None else state.status, event) is not None:
            continue
        state = evolve(state, event)
    return state
