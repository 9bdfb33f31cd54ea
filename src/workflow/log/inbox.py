"""An inbox read in turn: a subscription whose messages wait in a queue of ours.

Some replies are read one after the other rather than matched to a request: a batch of
direct gets (a work's history, the schedules in force) and the pulls of a bucket. nats-py
offers ``next_msg`` on a subscription made without a callback for this, but such a
subscription holds a client's close: nats-py's ``drain`` (what every ``close`` does)
waits until each subscription's own queue is empty, and nobody empties it once the read
that owned it is gone (cancelled in the middle of a batch, or left with a late pulled
message). The close then waits for nats-py's ``drain_timeout``, 30 seconds: a worker or a
``workflow server`` asked to stop would hang that long, and a follower stopped in a test
would outlive its deadline.

An :class:`Inbox` subscribes with a callback that moves each message into a queue it
owns, so a drain finds nothing left to wait for; what a reader never took is dropped with
the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats.aio.client
import nats.errors
from nats.aio.msg import Msg


class Inbox:
    """Messages on ``subject`` (usually an inbox, or an inbox's ``.*``), read with
    :meth:`next`; open with :meth:`open`, close with :meth:`close` (or let the
    connection's drain end it: it never waits on an inbox)."""

    def __init__(self, nc: nats.aio.client.Client, subject: str) -> None:
        self.nc = nc
        self.subject = subject
        self._messages: asyncio.Queue[Msg | Exception] = asyncio.Queue()
        self._subscription: object | None = None

    @classmethod
    async def open(cls, nc: nats.aio.client.Client, subject: str) -> Inbox:
        inbox = cls(nc, subject)
        inbox._subscription = await nc.subscribe(subject, cb=inbox._received)
        return inbox

    async def _received(self, msg: Msg) -> None:
        self._messages.put_nowait(msg)

    def fail(self, error: Exception) -> None:
        """Make the next :meth:`next` raise ``error`` (the server refused what it waits for)."""
        self._messages.put_nowait(error)

    async def next(self, timeout: float) -> Msg:
        """The next message; ``nats.errors.TimeoutError`` (as ``next_msg``) if none comes
        within ``timeout`` seconds; the error given to :meth:`fail` if that came first."""
        if not self._messages.empty():
            received = self._messages.get_nowait()
        else:
            try:
                async with asyncio.timeout(timeout):
                    received = await self._messages.get()
            except TimeoutError:
                raise nats.errors.TimeoutError from None
        if isinstance(received, Exception):
            raise received
        return received

    async def close(self) -> None:
        """Unsubscribe; anything not read is dropped. Never raises (a closing connection
        ends the subscription itself)."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()  # type: ignore[attr-defined]
