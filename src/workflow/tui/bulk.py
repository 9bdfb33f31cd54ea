"""Bulk actions from the works view: cancel, requeue or delete every work its search matches.

The same calls as ``workflow cancel --pipeline P --status queued`` (:mod:`workflow.cli.bulk`)
and the web UI's: the search's filter keywords go to ``client.select``, which refuses a
search that names no pipeline with the CLI's own message (a bulk action never spans
every pipeline by accident). The operator sees how many works matched, chooses the action
(:class:`~workflow.tui.dialogs.BulkScreen`), confirms it in the single action's dialog
(a cancel asks for its reason), and ``client.bulk.apply`` then writes each work its own
event, CAS'd against the head it was seen at and stamped with this client's name as
``by``; what it did is shown as :meth:`BulkReport.summary` words it (done, skipped as
changed meanwhile, refused). Selection and writes run in a worker, the status line says
how far the writes are, and the app stays live meanwhile.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import work
from textual.binding import Binding, BindingType

from workflow.core.bulk import DONE, Action, Seen
from workflow.core.errors import WorkflowError
from workflow.core.search import Search
from workflow.tui.actions import WorkActionsScreen
from workflow.tui.dialogs import BulkScreen, CancelScreen, ConfirmScreen, PriorityScreen

#: The reason each bulk action records when the operator gives none.
BULK_REASONS: dict[Action, str] = {
    "cancel": "cancelled in bulk from the TUI",
    "requeue": "requeued in bulk from the TUI",
    "delete": "deleted in bulk from the TUI",
}
#: What the status line calls each action under way.
DOING: dict[Action, str] = {"cancel": "cancelling", "requeue": "requeuing", "delete": "deleting"}


def works(count: int) -> str:
    return f"{count:,} work{'s' if count != 1 else ''}"


class BulkActionsScreen(WorkActionsScreen):
    """A view whose search selects the works a bulk action applies to."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("B", "bulk", "Bulk action on the search")]

    def bulk_search(self) -> Search:
        """The search in force (each view says which)."""
        return Search()

    def action_bulk(self) -> None:
        self._bulk_select(self.bulk_search())

    @work(exclusive=True, group="bulk-select")
    async def _bulk_select(self, search: Search) -> None:
        """Select the search's works now (or refuse the search), then offer the actions."""
        self.show_status(f"selecting the works of {search.describe()}…")
        try:
            seen = await self.source.ask(lambda client: client.select(**search.filters()))
        except WorkflowError as error:  # a search naming no pipeline, or the connection
            self.show_status(str(error), error=True)
            self.notify(str(error), severity="error", timeout=10)
            return
        self.show_status(f"{works(len(seen))} match {search.describe()}")
        if not seen:
            self.notify("no work matches; nothing changed")
            return
        what = f"{works(len(seen))} ({search.describe()})"

        def chosen(choice: str | None) -> None:
            if choice == "cancel":
                self.app.push_screen(CancelScreen(f"Cancel {what}?"), lambda reason: self._cancel(seen, reason))
            elif choice == "requeue":
                self._confirm_bulk(f"Requeue {what}, each at its own priority?", "Requeue them", "requeue", seen)
            elif choice == "priority":
                self.app.push_screen(PriorityScreen(f"the {works(len(seen))}", None),
                                     lambda priority: self._at_priority(what, seen, priority))
            elif choice == "delete":
                self._confirm_bulk(f"Delete {what}? They leave lists and counts, their histories are kept; "
                                   "an unfinished one is cancelled first.", "Delete them", "delete", seen)

        self.app.push_screen(BulkScreen(f"{what} match. Do what to every one of them?"), chosen)

    def _cancel(self, seen: list[Seen], reason: str | None) -> None:
        if reason is not None:
            self._bulk_apply("cancel", seen, reason=reason or BULK_REASONS["cancel"])

    def _at_priority(self, what: str, seen: list[Seen], priority: int | None) -> None:
        if priority is not None:
            self._confirm_bulk(f"Requeue {what} at priority {priority}?", "Requeue them", "requeue", seen,
                               priority=priority)

    def _confirm_bulk(self, question: str, yes: str, action: Action, seen: list[Seen], **options: Any) -> None:
        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self._bulk_apply(action, seen, reason=BULK_REASONS[action], **options)

        self.app.push_screen(ConfirmScreen(question, yes), answered)

    @work(exclusive=True, group="bulk-apply")
    async def _bulk_apply(self, action: Action, seen: list[Seen], **options: Any) -> None:
        """Write the action to each selected work, saying how far it is; then its summary."""
        total, step = len(seen), max(1, len(seen) // 100)

        def progress(through: int) -> None:
            if through % step == 0 or through == total:
                self.show_status(f"{DOING[action]}: {through:,}/{total:,}")

        self.show_status(f"{DOING[action]}: 0/{total:,}")
        try:
            report = await self.source.ask(lambda client: client.bulk.apply(action, seen, progress=progress, **options))
        except WorkflowError as error:
            self.show_status(f"stopped: {error}", error=True)
            self.notify(f"{action} stopped: {error} (what was {DONE[action]} before stays so)",
                        severity="error", timeout=10)
            self.reload()
            return
        self.show_status(report.summary())
        self.notify(report.summary(), timeout=10)
        self.reload()
