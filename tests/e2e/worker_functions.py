"""Functions the end-to-end tests deposit; imported by worker subprocesses (PYTHONPATH).

Functions that run for a while write their pid to ``marker`` first, so a test knows the
attempt is under way and can check afterwards that its process is gone.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path


def _mark(marker: str | None) -> None:
    if marker:
        with open(marker, "a") as file:
            file.write(f"{os.getpid()}\n")


def slow(seconds: float, marker: str | None = None) -> dict:
    _mark(marker)
    time.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}


def until_released(gate: str, marker: str | None = None, limit: float = 60) -> dict:
    """Run until the file ``gate`` exists (at most ``limit`` s): a test lets the work end
    once it has seen what it waits for, however slow the machine is."""
    _mark(marker)
    deadline = time.monotonic() + limit
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"released": Path(gate).exists(), "pid": os.getpid()}


def raises(message: str = "boom") -> None:
    raise ValueError(message)


def exits(code: int = 3, marker: str | None = None) -> None:
    _mark(marker)
    os._exit(code)


async def async_sum(a: float, b: float) -> dict:
    await asyncio.sleep(0.05)
    return {"sum": a + b}


def huge(megabytes: int = 9) -> dict:
    return {"blob": "x" * (megabytes << 20)}


def products() -> tuple:
    return {"ok": True}, [Path("/data/a.fits")], ["/plots/a.png"]


def imported(module: str) -> dict:
    import sys

    return {"imported": module in sys.modules}


def leaves_a_background_process(marker: str) -> dict:
    import subprocess

    background = subprocess.Popen(["sleep", "120"])
    _mark_pid(marker, background.pid)
    return {"started": background.pid}


def _mark_pid(marker: str, pid: int) -> None:
    with open(marker, "a") as file:
        file.write(f"{pid}\n")


def chain_step(fail_when: dict | None = None, **parameters) -> dict:
    """A step of a configuration run: returns its parameters, or raises when every item of
    ``fail_when`` is among them (one combination of a matrix fails)."""
    if fail_when and all(parameters.get(key) == value for key, value in fail_when.items()):
        raise ValueError(f"told to fail at {parameters}")
    return {"parameters": parameters}
