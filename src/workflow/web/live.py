"""The live pages' one view of the log: a single NATS subscription to every event, fanned
out to each open page's queue, and the pipelines' counts asked once per burst of events for
every open dashboard together.

So a hundred open pages cost one subscription and, per burst, one ``pipelines`` question,
not a hundred of each; a page's queue is bounded, and a browser too slow to read it loses
events (it reconnects and reloads what it shows), never the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workflow.core.subjects import PREFIX

#: Events a page may have waiting before newer ones are dropped for it.
QUEUE_SIZE = 10_000
#: Seconds the counts wait after an event for more to come (one question per burst).
COUNTS_DEBOUNCE = 0.3


@dataclass(eq=False)
class Listener:
    """One open page: the subjects it wants, and what arrived for it."""

    wants: Callable[[str], bool]
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE))

    def offer(self, item: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(item)


class LiveHub:
    """Every live page's events, from one subscription on the reading client."""

    def __init__(self, nc: Any, counts: Callable[[], Any]) -> None:
        self._nc = nc
        self._ask_counts = counts
        self._events: set[Listener] = set()
        self._counts: set[Listener] = set()
        self._changed = asyncio.Event()
        self._subscription: Any = None
        self._counter: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(f"{PREFIX}.>", cb=self._received)
        self._counter = asyncio.create_task(self._count_on_change(), name="web live counts")

    async def stop(self) -> None:
        if self._counter is not None:
            self._counter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._counter
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _received(self, msg: Any) -> None:
        for listener in self._events:
            if listener.wants(msg.subject):
                listener.offer((msg.subject, msg.data))
        if self._counts:
            self._changed.set()

    async def _count_on_change(self) -> None:
        while True:
            await self._changed.wait()
            await asyncio.sleep(COUNTS_DEBOUNCE)
            self._changed.clear()
            if not self._counts:
                continue
            try:
                counts = await self._ask_counts()
            except Exception as error:  # the results service away: the pages say so, the hub goes on
                counts = error
            for listener in list(self._counts):
                listener.offer(counts)

    @contextlib.contextmanager
    def events(self, wants: Callable[[str], bool]) -> Any:
        """A listener to the events whose subject ``wants`` accepts, while the block runs."""
        listener = Listener(wants)
        self._events.add(listener)
        try:
            yield listener
        finally:
            self._events.discard(listener)

    @contextlib.contextmanager
    def counts(self) -> Any:
        """A listener to the pipelines' counts, each time events changed them."""
        listener = Listener(lambda _subject: False)
        self._counts.add(listener)
        try:
            yield listener
        finally:
            self._counts.discard(listener)

    @property
    def listening(self) -> int:
        """How many pages listen now (the tests check that a closed page stops)."""
        return len(self._events) + len(self._counts)
