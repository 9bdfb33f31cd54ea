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
from collections.abc import Awaitable, Callable

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
