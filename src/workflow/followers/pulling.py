"""A follower's pull from its own durable consumer (the scheduler's firings, the notifier's
ended works): an empty wait and a moment's outage are not errors, only a pause."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.aio.msg import Msg

from workflow.log.gateway import UNAVAILABLE

#: Seconds one pull waits for messages before it asks again.
PULL_WAIT = 1.0
#: Seconds to pause after a pull the server could not answer (restarting, failing over).
OUTAGE_PAUSE = 1.0


async def pull(subscription: Any, batch: int, what: str, log: logging.Logger) -> list[Msg]:
    """Up to ``batch`` messages of a pull ``subscription``, waiting as long as it takes
    (``what`` names them in the debug line of an outage)."""
    while True:
        try:
            messages: list[Msg] = await subscription.fetch(batch, timeout=PULL_WAIT)
            return messages
        except TimeoutError:
            continue
        except UNAVAILABLE as error:  # the server is away a moment: ask again
            log.debug("pull of %s failed: %r", what, error)
            await asyncio.sleep(OUTAGE_PAUSE)
