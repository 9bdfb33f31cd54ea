"""A work's status: the one list every layer reads (the fold, queries, CLI, TUI, demo).

``created`` is a Work not yet deposited; it never reaches the log, so the read model
counts only the :data:`LOGGED` statuses. ``waiting`` is a deposited work that is in no
bucket yet: it waits for its precursors to succeed, or for its time (``Deposited.waits``).
``deleted`` is a finished work someone deleted (``Deleted``): hidden from lists and counts
by default, its history kept.
"""

from __future__ import annotations

from typing import Literal, get_args

Status = Literal["created", "waiting", "queued", "running", "success", "failure", "cancelled", "deleted"]
#: Every status, in lifecycle order.
STATUSES: tuple[Status, ...] = get_args(Status)
#: Statuses that lists and counts leave out unless asked (``--include-deleted``): a
#: deleted work's history stays in the log for audits, but it no longer clutters views.
HIDDEN: frozenset[Status] = frozenset({"deleted"})
#: The statuses a work can have in the log that lists and counts show (the read model's
#: per-status columns): every status but ``created`` (never logged) and the HIDDEN ones.
LOGGED: tuple[Status, ...] = tuple(s for s in STATUSES if s != "created" and s not in HIDDEN)
#: After these, the work will not run again unless someone re-queues it (a ``deleted``
#: work never again: nothing may follow its ``Deleted``).
FINISHED: frozenset[Status] = frozenset({"success", "failure", "cancelled", "deleted"})
