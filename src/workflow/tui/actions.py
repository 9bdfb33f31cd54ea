"""What an operator does to a work from the app: cancel, retry, change its priority.

Each is one event in the log (``client.cancel``, ``client.requeue``), asked for only after
a confirmation dialog (a cancel's also asks for its reason, optional), and refused up
front when the work's status says it cannot apply.
The log has the last word: a work that changed meanwhile is refused by its CAS, and the
refusal is shown as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from textual import work
from textual.binding import Binding, BindingType

import workflow
from workflow.core.errors import WorkflowError
from workflow.core.status import FINISHED
from workflow.core.work import Work
from workflow.tui.base import LiveScreen
from workflow.tui.dialogs import CancelScreen, ConfirmScreen, PriorityScreen

#: A work may be retried by hand once it ended without success.
RETRYABLE = ("failure", "cancelled")
#: The reason a cancel from the app records when the operator gives none.
NO_REASON = "cancelled from the TUI"


class WorkActionsScreen(LiveScreen):
    """A view with a selected work that the operator may act on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel_work", "Cancel"),
        Binding("R", "retry_work", "Retry"),
        Binding("p", "set_priority", "Priority"),
    ]

    def selected_work(self) -> Work | None:
        """The work the actions apply to (each view says which)."""
        return None

    def action_cancel_work(self) -> None:
        target = self.selected_work()
        if target is None or target.id is None:
            return
        if target.status in FINISHED:
            self.notify(f"{target.id} has already finished ({target.status})", severity="warning")
            return
        work_id = target.id

        def answered(reason: str | None) -> None:
            if reason is not None:
                self._act(lambda client: client.cancel(work_id, reason=reason or NO_REASON), f"cancelled {work_id}")

        self.app.push_screen(CancelScreen(f"Cancel work {work_id} ({target.pipeline}, {target.status})?"), answered)

    def action_retry_work(self) -> None:
        target = self.selected_work()
        if target is None or target.id is None:
            return
        if target.status not in RETRYABLE:
            self.notify(f"only a failed or cancelled work is retried; {target.id} is {target.status}",
                        severity="warning")
            return
        work_id = target.id
        self._confirm(f"Retry work {work_id} ({target.pipeline}, {target.status})? It goes back in its bucket.",
                      "Retry", lambda client: client.requeue(work_id, reason="retried from the TUI"),
                      f"re-queued {work_id}")

    def action_set_priority(self) -> None:
        target = self.selected_work()
        if target is None or target.id is None:
            return
        if target.status != "queued":
            self.notify(f"only a queued work changes priority; {target.id} is {target.status}", severity="warning")
            return
        work_id, current = target.id, target.priority

        def chosen(priority: int | None) -> None:
            if priority is None or priority == current:
                return
            self._confirm(f"Move work {work_id} from priority {current} to {priority}?", "Move it",
                          lambda client: client.requeue(work_id, priority=priority, reason="priority set from the TUI"),
                          f"{work_id} now at priority {priority}")

        self.app.push_screen(PriorityScreen(work_id, current), chosen)

    def _confirm(
        self, question: str, yes: str, act: Callable[[workflow.Client], Awaitable[Any]], done: str
    ) -> None:
        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self._act(act, done)

        self.app.push_screen(ConfirmScreen(question, yes), answered)

    @work(group="act")
    async def _act(self, act: Callable[[workflow.Client], Awaitable[Any]], done: str) -> None:
        try:
            await self.source.ask(act)
        except WorkflowError as error:
            self.notify(str(error), severity="error", timeout=8)
            return
        self.notify(done)
        self.reload()
