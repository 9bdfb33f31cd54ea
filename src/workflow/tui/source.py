"""The app's one connection: opening it (again and again until a server answers), asking
it questions, and watching the log's events as they are published.

No textual here: the app runs these coroutines in its workers and turns what they
report into messages, so the screens never touch NATS themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors

import workflow
from workflow.core.errors import NotConnectedError, WorkflowError
from workflow.core.settings import redacted
from workflow.core.subjects import PREFIX
from workflow.tui.rows import FeedItem

T = TypeVar("T")

#: Every lifecycle event of every work.
EVENTS = f"{PREFIX}.>"
#: How many of the newest events the feed keeps.
FEED_SIZE = 1000


class Source:
    """The client of a running app, made and remade by :meth:`connect`."""

    def __init__(self, connect_options: dict[str, Any]) -> None:
        self.connect_options = connect_options
        self.url = redacted(workflow.connect(**connect_options).url)  # shown: no password
        self.client: workflow.Client | None = None
        self.feed: deque[FeedItem] = deque(maxlen=FEED_SIZE)
        #: When the watch of the log began (unix seconds): the feed holds events from then on.
        self.watching_since: float | None = None

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.is_open

    async def connect(self, on_failure: Callable[[str], None], retry_seconds: float = 2.0) -> workflow.Client:
        """Open a client, retrying every ``retry_seconds`` (each failure reported) until one opens."""
        while True:
            client = workflow.connect(**self.connect_options)
            try:
                self.client = await client.open()
                return self.client
            except WorkflowError as error:
                on_failure(str(error))
            await asyncio.sleep(retry_seconds)

    async def ask(self, question: Callable[[workflow.Client], Awaitable[T]]) -> T:
        """The answer of the open client to ``question`` (WorkflowError when it fails)."""
        if self.client is None:
            raise NotConnectedError(f"not connected to {self.url} yet")
        try:
            return await question(self.client)
        except (nats.errors.Error, TimeoutError) as error:  # raised while NATS reconnects
            raise WorkflowError(f"NATS: {type(error).__name__}: {error}") from None

    async def watch(self, on_batch: Callable[[list[FeedItem]], object], debounce: float = 0.25) -> None:
        """Report the log's new events in batches, at most one per ``debounce`` seconds,
        until cancelled. The subscription is core NATS on the client's connection, so it
        costs the log nothing and nats-py renews it after a reconnect."""
        if self.client is None:
            raise NotConnectedError(f"not connected to {self.url} yet")
        arrived = asyncio.Event()
        pending: list[FeedItem] = []

        async def received(msg: Any) -> None:
            pending.append(FeedItem(msg.subject, msg.data))
            arrived.set()

        subscription = await self.client.nc.subscribe(EVENTS, cb=received)
        if self.watching_since is None:
            self.watching_since = time.time()
        try:
            while True:
                await arrived.wait()
                await asyncio.sleep(debounce)
                arrived.clear()
                batch, pending[:] = list(pending), []
                self.feed.extend(batch)
                on_batch(batch)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
