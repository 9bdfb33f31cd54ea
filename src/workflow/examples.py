"""Demo functions for ``workflow run`` (the seed's ``add``, and a few friends).

    workflow deposit sample-pipeline --param a=1 --param b=2
    workflow run sample-pipeline --function workflow.examples.add

Each shows one shape of the return-value rule (see :mod:`workflow.worker.runner`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


def add(a: int, b: int) -> int:
    """The seed's function: returns a + b, recorded as ``{"value": a + b}``."""
    return a + b


def add_results(a: float, b: float) -> dict[str, Any]:
    """A results dict is recorded as it is."""
    return {"sum": a + b}


def with_products(name: str = "demo") -> tuple[dict[str, Any], list[str], list[str]]:
    """The CHIME/FRB pipeline interface: (results, products, plots)."""
    return {"name": name}, [f"/data/{name}.fits"], [f"/plots/{name}.png"]


def sleep(seconds: float = 1.0) -> dict[str, float]:
    """Sleeps, then reports how long: handy for trying leases, timeouts and cancel."""
    time.sleep(seconds)
    return {"slept": seconds}


async def async_add(a: float, b: float, delay: float = 0.0) -> dict[str, float]:
    """An async function: the worker awaits it."""
    await asyncio.sleep(delay)
    return {"sum": a + b}


def fail(message: str = "this work always fails") -> None:
    """Always raises: shows retries, then the final failure with its traceback."""
    raise RuntimeError(message)
