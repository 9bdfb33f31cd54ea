"""Operations on many works at once: what each work needs, and what became of each.

An operator cleans up by the hundred (``workflow cancel --pipeline P --status queued``).
Each selected work gets its own event(s), each a compare-and-set against the head the
selector saw (:class:`Seen`): a work that changed since it was seen is *skipped and
counted*, never acted on blindly, because what the operator selected ("queued") may no
longer be true of it. This module is the pure part: which events an action appends to a
work in a given status (:func:`steps`), and the tally (:class:`BulkReport`). The log
layer (:mod:`workflow.log.bulk`) does the appends.

Why a delete of an unfinished work is a ``Cancelled`` then a ``Deleted`` (and not a
``Deleted`` alone): the fold allows ``Deleted`` only after a finished status, so a
deleted work can never be held by a worker or sit in a bucket, and its last status
before the delete stays a fact in its history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from workflow.core import events as ev
from workflow.core.status import FINISHED, Status

Action = Literal["cancel", "requeue", "delete"]
ACTIONS: tuple[Action, ...] = ("cancel", "requeue", "delete")
#: What each action's report calls the works it acted on.
DONE: dict[Action, str] = {"cancel": "cancelled", "requeue": "requeued", "delete": "deleted"}
#: One event an action appends: its type's tag (``ev.Cancelled`` is ``"cancelled"``).
Step = Literal["cancelled", "requeued", "deleted"]


@dataclass(frozen=True)
class Seen:
    """A work as the selector saw it: its last event's stream sequence (the CAS of the
    first write) and its status then."""

    work_id: str
    pipeline: str
    seq: int
    status: Status


def steps(action: Action, status: Status) -> tuple[Step, ...] | str:
    """The events ``action`` appends to a work in ``status``, in order; or why it is refused.

    - cancel: anything not finished (a running work is stopped as its worker hears it);
    - requeue: anything but a running work (cancel it first) or a deleted one;
    - delete: a finished work gets ``Deleted``; an unfinished one is cancelled first.
    """
    if status == "deleted":
        return "already deleted"
    if action == "cancel":
        return f"already finished ({status})" if status in FINISHED else ("cancelled",)
    if action == "requeue":
        return "running; cancel it first" if status == "running" else ("requeued",)
    return ("deleted",) if status in FINISHED else ("cancelled", "deleted")


def status_after(event: ev.AnyEvent) -> Status:
    """A work's status once ``event`` is its head (its last event): what :func:`steps`
    needs when a work is named by id and only its head is read, not its whole history."""
    match event:
        case ev.Deposited(waits=waits):
            return "queued" if waits is None else "waiting"
        case ev.Requeued():
            return "queued"
        case ev.Started():
            return "running"
        case ev.Succeeded():
            return "success"
        case ev.Failed(will_retry=will_retry):
            return "queued" if will_retry else "failure"
        case ev.Cancelled():
            return "cancelled"
        case ev.Deleted():
            return "deleted"
        case ev.Notified(status=status) if status in FINISHED:  # it follows only an ended work, unchanged
            return status
    raise TypeError(f"no status follows {type(event).__name__}")


@dataclass
class BulkReport:
    """What one bulk action did: the works it acted on, and each one it skipped, and why.

    ``changed``: the work changed between the selection and the write (the CAS refused
    it); ``refused``: its state does not allow the action (work id -> why); ``missing``:
    no work has that id (ids given by hand only).
    """

    action: Action
    done: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def matched(self) -> int:
        """How many works the action was asked to act on."""
        return len(self.done) + len(self.changed) + len(self.refused) + len(self.missing)

    def summary(self) -> str:
        """One line: ``cancelled 812, skipped 3 (changed meanwhile), 2 refused (already finished)``."""
        parts = [f"{DONE[self.action]} {len(self.done):,}"]
        if self.changed:
            parts.append(f"skipped {len(self.changed):,} (changed meanwhile)")
        if self.refused:
            reasons = sorted({why.split(" (")[0].split(";")[0] for why in self.refused.values()})
            parts.append(f"refused {len(self.refused):,} ({', '.join(reasons)})")
        if self.missing:
            parts.append(f"not found {len(self.missing):,}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``: the counts, and the ids behind each."""
        return {
            "action": self.action, "matched": self.matched, DONE[self.action]: len(self.done),
            "changed": len(self.changed), "refused": len(self.refused), "missing": len(self.missing),
            "ids": {"done": self.done, "changed": self.changed, "refused": self.refused, "missing": self.missing},
        }
