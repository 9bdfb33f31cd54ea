"""What the tables show: columns (fewer on a narrow terminal) and the rows of each view.

Pure functions from the client's answers to tuples of text, so each view only fills a
table, and the columns that fit 80 columns are decided in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from workflow.core import events as ev
from workflow.core.display import describe
from workflow.core.status import LOGGED
from workflow.core.work import Work
from workflow.log.buckets import BucketStats

Row = tuple[str, ...]

#: Below this many columns, tables drop the columns that matter least.
WIDE = 110


@dataclass(frozen=True)
class Column:
    """A works table column: its label, the Work field it shows, and the order it sorts by."""

    label: str
    field: str
    order: str | None  # a results ``order`` column, or None when the column cannot be sorted


WORK_COLUMNS_NARROW = (
    Column("id", "id", "id"), Column("status", "status", "status"), Column("att", "attempt", "attempt"),
    Column("pri", "priority", "priority"), Column("site", "site", "site"),
    Column("created", "creation", "creation"),
)
WORK_COLUMNS_WIDE = (
    *WORK_COLUMNS_NARROW[:2], Column("pipeline", "pipeline", "pipeline"), *WORK_COLUMNS_NARROW[2:],
    Column("user", "user", "user"), Column("stopped", "stop", "stop"), Column("tags", "tags", None),
)
PIPELINE_COLUMNS = ("pipeline", "total", *LOGGED)
BUCKET_COLUMNS = ("pipeline", "site", "pri", "waiting", "held", "redelivered")
EVENT_COLUMNS = ("time", "pipeline", "work", "event", "what")


def work_columns(width: int) -> tuple[Column, ...]:
    return WORK_COLUMNS_WIDE if width >= WIDE else WORK_COLUMNS_NARROW


def short_time(timestamp: float | None) -> str:
    """``MM-DD HH:MM:SS`` in UTC: a table cell (the detail view shows full times)."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%m-%d %H:%M:%S")


def cell(work: Work, name: str) -> str:
    value: Any = getattr(work, name)
    if name in ("creation", "start", "stop"):
        return short_time(value)
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def work_rows(works: Iterable[Work], columns: Sequence[Column]) -> list[Row]:
    return [tuple(cell(work, column.field) for column in columns) for work in works]


def pipeline_rows(counts: dict[str, dict[str, int]]) -> list[Row]:
    """One row per pipeline, by name: its total and its count in every status."""
    return [(name, *(str(c.get(k, 0)) for k in PIPELINE_COLUMNS[1:])) for name, c in sorted(counts.items())]


def bucket_rows(buckets: Iterable[BucketStats]) -> list[Row]:
    """Buckets by pipeline, site, then highest priority first."""
    ordered = sorted(buckets, key=lambda b: (b.pipeline, b.site, -b.priority))
    return [(b.pipeline, b.site, str(b.priority), str(b.waiting), str(b.held), str(b.redelivered)) for b in ordered]


def bucket_key(row: Row) -> str:
    return "/".join(row[:3])


@dataclass(frozen=True)
class FeedItem:
    """One event as the live feed received it (decoded when shown)."""

    subject: str
    data: bytes

    @property
    def pipeline(self) -> str:
        return self.subject.split(".")[1]

    @property
    def work_id(self) -> str:
        return self.subject.split(".")[2]


def event_rows(items: Iterable[FeedItem]) -> list[Row]:
    rows: list[Row] = []
    for item in items:
        try:
            event = ev.decode(item.data)
        except ValueError:  # not an event this version knows: show its subject
            rows.append(("-", item.pipeline, item.work_id, "?", item.subject))
            continue
        rows.append((short_time(event.time), event.pipeline, event.work_id, type(event).__name__, describe(event)))
    return rows


def sparkline_label(per_minute: Sequence[int]) -> str:
    total, peak = sum(per_minute), max(per_minute, default=0)
    last = per_minute[-1] if per_minute else 0
    return f"finished per minute, last {len(per_minute)} min: {total} in all, peak {peak}/min, last minute {last}"
