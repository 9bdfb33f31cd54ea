"""Demo functions for ``workflow run`` (the seed's ``add``, and a few friends).

    workflow deposit sample-pipeline --param a=1 --param b=2
    workflow run sample-pipeline --function workflow.examples.add

Each shows one shape of the return-value rule (see :mod:`workflow.worker.runner`).
"""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from pathlib import Path
from typing import Any


def add(a: int, b: int, plot: str | None = None) -> int | tuple[dict[str, Any], list[str], list[str]]:
    """The seed's function: returns a + b, recorded as ``{"value": a + b}``. With ``plot``
    (a directory) it also draws a small PNG there and returns it as a plot, which the
    worker archives (``make demo`` does this for one work)."""
    if plot is None:
        return a + b
    picture = Path(plot) / f"sum-{a}-{b}.png"
    picture.parent.mkdir(parents=True, exist_ok=True)
    picture.write_bytes(png(24, 24, seed=int(a + b)))
    return {"value": a + b}, [], [str(picture)]


def add_results(a: float, b: float) -> dict[str, Any]:
    """A results dict is recorded as it is."""
    return {"sum": a + b}


def with_products(
    name: str = "demo", directory: str = ".", size: int = 1024,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The CHIME/FRB pipeline interface: (results, products, plots). Writes ``<name>.dat``
    (``size`` bytes) and ``<name>.png`` (a small picture) in ``directory`` and returns
    their paths; the worker archives them (the work's ``config["archive"]``)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    product = folder / f"{name}.dat"
    with open(product, "wb") as file:
        block = bytes(range(256)) * 4096
        left = size
        while left > 0:
            file.write(block[:left])
            left -= len(block)
    plot = folder / f"{name}.png"
    plot.write_bytes(png(32, 32, seed=size))
    return {"name": name, "bytes": size}, [str(product)], [str(plot)]


def png(width: int, height: int, seed: int = 0) -> bytes:
    """A small RGB PNG (a gradient), written with zlib alone: a plot without matplotlib."""
    rows = b"".join(
        b"\x00" + bytes(((x * 8 + seed) % 256, (y * 8) % 256, (x * y + seed) % 256)[c]
                        for x in range(width) for c in range(3))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


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
