"""The ``works`` table's columns, named once for everyone who writes or reads them.

Kept apart from the projection (Arrow) and the database (DuckDB) so that the queries a
client builds, and the worker's processes that import them, load neither.
"""

from __future__ import annotations

import msgspec

from workflow.core.work import Work

#: Work fields whose values are dicts or free-form lists: stored as JSON text.
JSON_FIELDS = ("parameters", "results", "precursors", "config", "notify")
WORK_FIELDS: tuple[str, ...] = tuple(f.name for f in msgspec.structs.fields(Work))
#: Columns of ``works``: every Work field, then the sequence and time of its last event.
WORK_COLUMNS: tuple[str, ...] = (*WORK_FIELDS, "seq", "updated")
#: Column names that are SQL keywords.
_QUOTED = {"group", "user"}


def quote(column: str) -> str:
    """A column name as SQL (``group`` and ``user`` are keywords)."""
    return f'"{column}"' if column in _QUOTED else column
