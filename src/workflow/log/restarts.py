"""Long-lived followers of the log (the resolver, the scheduler) start again after a failure.

They run inside ``workflow server`` next to the projector: one of them failing (a new
cluster answering 503 while it elects a stream's leader, NATS away longer than a reconnect,
a stream deleted under it) must not take the server down. Each rebuilds its state from the
log on start and writes only with the CAS, so starting again is always safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

#: Seconds before the first restart, doubled after each failure up to :data:`LONGEST`.
FIRST = 1.0
LONGEST = 30.0


async def restarting(name: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event, log: logging.Logger) -> None:
    """Await ``run()`` until it returns or ``stop`` is set; after a failure, log it and
    await it again after a pause (1 s, doubling up to 30 s)."""
    delay = FIRST
    while not stop.is_set():
        try:
            await run()
            return
        except Exception as error:
            log.warning("%s stopped (%r); starting again from the log in %.0f s", name, error, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, LONGEST)


async def until_stopped_or_failed(stop: asyncio.Event, *coroutines: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutines`` side by side until ``stop`` is set or one of them fails (its
    error is raised); the others are cancelled either way, and awaited: their own
    clean-up (an inbox unsubscribed, a read given up) is over before the caller closes
    the connection they share."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            error = task.exception() if task.done() else None
            if error is not None:
                raise error
    finally:
        stopped.cancel()
        await cancel_and_wait(tasks)


#: Seconds a cancelled part is given to end before it is cancelled again, and how many times.
CANCEL_PATIENCE = 1.0
CANCEL_TRIES = 5


async def cancel_and_wait(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until they have ended, cancelling again any that goes on.

    A cancel can be lost on Python 3.11: ``asyncio.wait_for`` (inside every nats-py
    request) returns the answer instead of raising when the answer and the cancel come in
    the same turn of the loop, so a follower's loop carries on to its next wait. Such a
    task is cancelled again every :data:`CANCEL_PATIENCE` seconds; one still running after
    :data:`CANCEL_TRIES` tries is left behind (and logged) rather than hanging the stop.
    """
    pending = {task for task in tasks if not task.done()}
    for _ in range(CANCEL_TRIES):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_PATIENCE)
    for task in pending:
        logging.getLogger(__name__).warning("%s did not end when cancelled; left behind", task.get_name())
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a part's error after the stop is not news
