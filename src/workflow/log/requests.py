"""Request and reply for the log's appends: what nats-py's ``request`` does, with less per call.

Every event is appended as a request: published with a reply subject, on which JetStream
answers with its acknowledgement (the sequence stored, or why not). A no-op work costs
a worker two of them (``Started``, ``Succeeded``) and a deposit one. nats-py's
``request`` gives each call a reply token from a fresh NUID plus two bytes from the
operating system's random source, a done-callback, and ``asyncio.wait_for`` around the
answer's future; in a profile of ``client.deposit`` those made up most of the cost of
the request on the client's side.

:class:`Requests` keeps one wildcard inbox subscription per connection (as nats-py does),
numbers its requests with a counter (a token only has to be unique within the inbox,
which is itself unique), and times each out with one timer handle. The answer and the
errors are nats-py's: the reply ``Msg``, ``nats.errors.TimeoutError`` after ``timeout``
seconds, ``nats.errors.NoRespondersError`` when nobody listens on the subject (no stream
takes it). Only public nats-py calls are used (``new_inbox``, ``subscribe``, ``publish``).
"""

from __future__ import annotations

import asyncio
import itertools

import nats.aio.client
import nats.errors
from nats.aio.msg import Msg

#: The status header a server sends instead of an answer when nobody is subscribed.
_NO_RESPONDERS = "503"


class Requests:
    """Requests over ``nc`` whose replies come back on one inbox subscription."""

    def __init__(self, nc: nats.aio.client.Client) -> None:
        self.nc = nc
        self._prefix = nc.new_inbox() + "."
        self._pending: dict[str, asyncio.Future[Msg]] = {}
        self._tokens = itertools.count()
        self._subscription: object | None = None
        self._subscribing = asyncio.Lock()

    async def request(
        self, subject: str, payload: bytes, *, headers: dict[str, str] | None = None, timeout: float = 5.0
    ) -> Msg:
        """Publish ``payload`` on ``subject`` and return the reply (errors as nats-py's)."""
        if self._subscription is None:
            await self._subscribe()
        loop = asyncio.get_running_loop()
        token = str(next(self._tokens))
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = future
        timer = loop.call_later(timeout, _expire, future)
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            reply = await future
        finally:
            timer.cancel()
            del self._pending[token]
        if reply.headers and reply.headers.get("Status") == _NO_RESPONDERS:
            raise nats.errors.NoRespondersError
        return reply

    def fail_pending(self, error: Exception) -> None:
        """Fail every request still waiting for its answer with ``error`` (the server
        refused a publish: it answers nothing, so its request would wait for its timeout;
        which request it was is not said, so all of them fail, as nats-py's would)."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    async def _subscribe(self) -> None:
        """The inbox subscription, made by the first request (the others wait for it)."""
        async with self._subscribing:
            if self._subscription is None:
                self._subscription = await self.nc.subscribe(self._prefix + "*", cb=self._answered)

    async def _answered(self, msg: Msg) -> None:
        future = self._pending.get(msg.subject[len(self._prefix):])
        if future is not None and not future.done():  # else: late, after its timeout
            future.set_result(msg)


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError())
