"""A work's status: the one list every layer reads (the fold, queries, CLI, TUI, demo).

``created`` is a Work not yet deposited; it never reaches the log, so the read model
counts only the :data:`LOGGED` statuses. ``waiting`` is a deposited work that is in no
bucket yet: it waits for its precursors to succeed, or for its time (``Deposited.waits``).
"""

from __future__ import annotations

from typing import Literal, get_args

Status = Literal["created", "waiting", "queued", "running", "success", "failure", "cancelled"]
#: Every status, in lifecycle order.
STATUSES: tuple[Status, ...] = get_args(Status)
#: The statuses a work can have in the log (and so in the read model).
LOGGED: tuple[Status, ...] = tuple(s for s in STATUSES if s != "created")
#: After these, the work will not run again unless someone re-queues it.
FINISHED: frozenset[Status] = frozenset({"success", "failure", "cancelled"})
