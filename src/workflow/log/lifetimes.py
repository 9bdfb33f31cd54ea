"""How long the parts of a process live, and how they end: one place for every stop.

Parts that run side by side until a stop or the first failure (the server's services, each
follower's loops), cancelled and awaited so that their clean-up is over before the
connection they share closes, cancelled again where Python 3.11 lost a cancel; and child
processes that die with their parent (the embedded nats-server, a worker's children).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any


async def until_stopped_or_failed(
    stop: asyncio.Event, *parts: Coroutine[Any, Any, None] | asyncio.Task[None], grace: float = 0.0
) -> None:
    """Run ``parts`` (coroutines or tasks) side by side until ``stop`` is set or one of them
    fails (its error is raised). On a stop, the parts still running are given ``grace``
    seconds to end by themselves (they watch ``stop`` too: the projector finishes its batch);
    then, and at once after a failure, the rest are cancelled and awaited
    (:func:`cancel_and_wait`): their own clean-up (an inbox unsubscribed, a read given up)
    is over before the caller closes the connection they share."""
    tasks = [part if isinstance(part, asyncio.Task) else asyncio.create_task(part) for part in parts]
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            error = task.exception() if task.done() and not task.cancelled() else None
            if error is not None:
                raise error
        if grace > 0 and stop.is_set():
            await asyncio.wait(tasks, timeout=grace)
            for task in tasks:  # a part that failed while ending is still the caller's news
                error = task.exception() if task.done() and not task.cancelled() else None
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


_PR_SET_PDEATHSIG = 1


def prctl(option: int, value: int) -> bool:
    """Linux ``prctl``; False where it is missing or refused."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return int(ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)) == 0
    except Exception:
        return False


def die_with_parent(signum: int = signal.SIGKILL) -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to send ``signum`` to this process when its parent dies (no-op elsewhere):
    a child (the embedded nats-server, a worker's function) never outlives a SIGKILLed parent."""
    prctl(_PR_SET_PDEATHSIG, signum)
