"""``workflow tui``: the operator's view of a running workflow system, live.

Four views, each a textual *mode* with its own screen stack: the dashboard (``d``:
pipelines, throughput, buckets), the works (``w``: search, sort, page; ``enter`` opens one),
the live event feed (``e``) and the configurations' runs (``C``: ``enter`` opens a run's
works). ``/`` from any of them opens the works search, the cursor in the box, as an
operator expects of ``/`` wherever they are. The app holds the one connection
(:class:`Source`): it opens it, retrying until a server answers, says in the header whether
it is live, and runs one long-lived worker that watches the log's events and posts
:class:`LogChanged` to the views, which reload from the results service (``fresh=True``),
so a change shows within a second without a key press. A slow timer reloads too, as a
safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen

from workflow.tui.base import LiveScreen, LogChanged, Reconnected
from workflow.tui.dashboard import DashboardScreen, OpenWorks
from workflow.tui.dialogs import HelpScreen
from workflow.tui.feed import EventsScreen
from workflow.tui.runs import RunsScreen
from workflow.tui.source import Source
from workflow.tui.works import PAGE_SIZE, WorksScreen


class WorkflowApp(App[int]):
    """The operator's view: ``WorkflowApp({"url": ...}).run()``."""

    CSS_PATH = "app.tcss"
    TITLE = "workflow"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "view('dashboard')", "Dashboard"),
        Binding("w", "view('works')", "Works"),
        Binding("e", "view('events')", "Events"),
        Binding("C", "view('runs')", "Config runs"),
        Binding("slash", "search", "Search works"),
        Binding("r", "reload", "Reload", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        connect_options: dict[str, Any] | None = None,
        refresh_seconds: float = 10.0,
        retry_seconds: float = 2.0,
        page_size: int = PAGE_SIZE,
    ) -> None:
        super().__init__()
        self.source = Source(connect_options or {})
        self.refresh_seconds = refresh_seconds
        self.retry_seconds = retry_seconds
        self.live = False
        self.add_mode("dashboard", lambda: DashboardScreen(self.source))
        self.add_mode("works", lambda: WorksScreen(self.source, page_size))
        self.add_mode("events", lambda: EventsScreen(self.source))
        self.add_mode("runs", lambda: RunsScreen(self.source))

    async def on_mount(self) -> None:
        self.sub_title = f"connecting to {self.source.url}…"
        await self.switch_mode("dashboard")
        self.connect()
        self.set_interval(1.0, self.check_connection)
        self.set_interval(self.refresh_seconds, self.action_reload)

    async def on_unmount(self) -> None:
        """Close the connection once the workers are over: one still unsubscribing while
        the connection drains would fail the app's exit."""
        self.workers.cancel_all()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.workers.wait_for_complete(), 5)
        await self.source.close()

    # -- the connection ---------------------------------------------------------------

    @work(exclusive=True, group="connect")
    async def connect(self) -> None:
        """Open the connection (again and again until a server answers), then watch the log."""

        def failed(error: str) -> None:
            self.sub_title = f"UNREACHABLE, retrying every {self.retry_seconds:g}s: {error}"

        await self.source.connect(failed, self.retry_seconds)
        self.check_connection()
        self.watch_log()

    @work(exclusive=True, group="watch")
    async def watch_log(self) -> None:
        """The one long-lived watch of the log: a debounced batch of events, as a message."""
        await self.source.watch(lambda batch: self.post_message(LogChanged(batch)))

    def check_connection(self) -> None:
        """Say in the header whether the connection is up; reload the views when it comes back."""
        if self.source.client is None:
            return
        live = self.source.connected
        if live == self.live:
            return
        self.live = live
        if live:
            self.sub_title = f"{self.source.url} · live"
            self._tell_views(Reconnected)
        else:
            self.sub_title = f"UNREACHABLE: {self.source.url}, reconnecting…"
            self.notify(f"lost the connection to {self.source.url}; reconnecting", severity="error")

    def on_log_changed(self, message: LogChanged) -> None:
        self._tell_views(lambda: LogChanged(message.batch))

    def _tell_views(self, make: Any) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, LiveScreen):
                screen.post_message(make())

    # -- actions ----------------------------------------------------------------------

    async def action_view(self, mode: str) -> None:
        await self.switch_mode(mode)

    def action_reload(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, LiveScreen):
                screen.reload()

    async def on_open_works(self, message: OpenWorks) -> None:
        (await self._works_in_sight()).search_for(message.query)

    async def action_search(self) -> None:
        """The works search, the cursor in its box, from whichever view is shown (a dialog
        keeps its keys: its answer comes first)."""
        if isinstance(self.screen, ModalScreen):
            return
        (await self._works_in_sight()).action_search()

    async def _works_in_sight(self) -> WorksScreen:
        """The works view, shown: its mode, with any work opened over it closed."""
        await self.switch_mode("works")
        while len(self.screen_stack) > 1 and not isinstance(self.screen, WorksScreen):
            await self.pop_screen()
        works = self.screen
        assert isinstance(works, WorksScreen)  # the works mode's first screen
        return works

    def action_help(self) -> None:
        """The keys of the screen in sight, and the syntax of its search or filter."""
        if isinstance(self.screen, HelpScreen):
            return
        keys: dict[str, str] = {}
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if binding.description:
                keys.setdefault(binding.description, binding.key_display or self.get_key_display(binding))
        syntax = self.screen.SYNTAX if isinstance(self.screen, LiveScreen) else None
        self.push_screen(HelpScreen([(key, description) for description, key in keys.items()], syntax))
