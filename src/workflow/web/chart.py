"""Works finished per minute as an inline SVG bar chart: numbers in, markup out, no I/O.

Drawn on the server so the page needs no chart library and reads offline; the markup holds
only numbers this module formats, never a user string.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    minutes_ago: int


@dataclass(frozen=True)
class Chart:
    """What the template draws: bars in a ``width`` x ``height`` viewBox, and the peak."""

    bars: list[Bar]
    width: int
    height: int
    peak: int
    total: int


def per_minute_chart(per_minute: list[int], width: int = 600, height: int = 120) -> Chart:
    """Bars for ``per_minute`` (oldest first), scaled so the busiest minute fills the height."""
    peak = max(per_minute, default=0)
    slot = width / max(len(per_minute), 1)
    bars = []
    for index, count in enumerate(per_minute):
        bar_height = 0.0 if peak == 0 else height * count / peak
        bars.append(Bar(round(index * slot, 2), round(height - bar_height, 2), round(max(slot - 1, 1), 2),
                        round(bar_height, 2), count, len(per_minute) - index))
    return Chart(bars, width, height, peak, sum(per_minute))
