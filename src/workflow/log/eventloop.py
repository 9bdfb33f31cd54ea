"""Which event loop runs the long-lived processes: uvloop where it is installed.

A worker, the projector and the server spend most of their time in the event loop and in
nats-py's per-message Python; uvloop (libuv under asyncio's API) cut a thread-mode
worker's time per no-op work by about a seventh in ``benchmarks/work_queue.py``'s
profile. It is a dependency on Linux and macOS; elsewhere, or with
``WORKFLOW_EVENT_LOOP=asyncio`` (to rule it out when chasing a bug), the standard loop runs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on uvloop when available (see the module docstring)."""
    if os.environ.get("WORKFLOW_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def name() -> str:
    """The running loop's kind, for the start-up line: ``uvloop`` or ``asyncio``."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
