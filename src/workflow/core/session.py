"""Which client the seed's shortcuts (``await work.deposit()``, ``Work.withdraw``,
``await work.update()``) talk through, without the core importing the client.

The core names only what it needs (:class:`Session`, a structural type). The log layer
*binds* an open client to the current task (``async with workflow.connect()`` does it),
and installs a *factory* for a short-lived client when none is open (``workflow``'s
package face does it at import). Dependencies point inward: the core is told about the
client, it never reaches out for it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from workflow.core.errors import WorkflowError


class Session(Protocol):
    """What the seed's shortcuts need from a client (works typed ``Any``: this module sits
    below ``workflow.core.work``, which imports it)."""

    @property
    def is_open(self) -> bool: ...

    async def deposit(self, works: Any) -> list[str]: ...

    async def withdraw(
        self, pipeline: str | Sequence[str], *, site: str | None = None, priority: int | None = None,
        tags: Any = None, event: Any = None, user: str | None = None, parent: str | None = None,
    ) -> Any: ...

    async def update(self, work: Any) -> None: ...

    async def delete(self, work_id: str, reason: str | None = None) -> Any: ...


_bound: contextvars.ContextVar[Session | None] = contextvars.ContextVar("workflow_session", default=None)
_factory: Callable[[], AbstractAsyncContextManager[Any]] | None = None


def bind(session: Session) -> contextvars.Token[Session | None]:
    """Make ``session`` the one the shortcuts use in this task (until :func:`unbind`)."""
    return _bound.set(session)


def unbind(token: contextvars.Token[Session | None]) -> None:
    _bound.reset(token)


def install_factory(factory: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
    """How to open a short-lived session when none is bound (the default client)."""
    global _factory
    _factory = factory


@contextlib.asynccontextmanager
async def current(require_open: bool = False) -> AsyncIterator[Session]:
    """The session bound in this task, else a short-lived one from the factory."""
    session = _bound.get()
    if session is not None and session.is_open:
        yield session
        return
    if require_open:
        raise WorkflowError(
            "Work.withdraw needs an open client to hold the work's lease: "
            "use it inside `async with workflow.connect():`"
        )
    if _factory is None:
        raise WorkflowError("no client: use `async with workflow.connect():` (or `import workflow` first)")
    async with _factory() as opened:
        yield opened
