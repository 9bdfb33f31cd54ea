"""The DuckDB read model: tables, the checkpoint, and writing one batch atomically.

Three tables:

- ``works``: one row per work, every ``Work`` field (dicts as JSON, lists as lists,
  times as unix seconds like ``Work``), plus ``seq`` and ``updated``: the stream
  sequence and time of the work's last event;
- ``events``: every event, with its stream sequence, the server's time (``logged``),
  the writer's time, work id, pipeline, type, attempt, subject and the payload as JSON;
- ``checkpoint``: one row, the last stream sequence folded into the tables above.

A batch's events rows, its works rows and the new checkpoint are written in **one
transaction**, so after a crash the database is at a batch boundary and the projector
resumes at ``checkpoint + 1``: no event is applied twice, none is skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pyarrow as pa

from workflow.projection import WORK_COLUMNS, Batch, Row

SCHEMA = """
CREATE TABLE IF NOT EXISTS works (
    id VARCHAR PRIMARY KEY,
    pipeline VARCHAR NOT NULL,
    parameters JSON,
    results JSON,
    path VARCHAR,
    event BIGINT[],
    tags VARCHAR[],
    "group" VARCHAR[],
    timeout INTEGER,
    retries INTEGER,
    priority INTEGER,
    products VARCHAR[],
    plots VARCHAR[],
    site VARCHAR,
    "user" VARCHAR,
    archive BOOLEAN,
    precursors JSON,
    config JSON,
    function VARCHAR,
    command VARCHAR[],
    creation DOUBLE,
    start DOUBLE,
    stop DOUBLE,
    attempt INTEGER,
    status VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    updated DOUBLE
);
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT NOT NULL,
    logged DOUBLE,
    time DOUBLE,
    work_id VARCHAR NOT NULL,
    pipeline VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    attempt INTEGER,
    subject VARCHAR,
    payload JSON
);
CREATE TABLE IF NOT EXISTS checkpoint (
    stream VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL,
    updated DOUBLE
);
"""

_QUOTED = {"group", "user"}
COLUMN_LIST = ", ".join(f'"{c}"' if c in _QUOTED else c for c in WORK_COLUMNS)


def quote(column: str) -> str:
    """A column name as SQL (``group`` and ``user`` are keywords)."""
    return f'"{column}"' if column in _QUOTED else column


def connect(path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and, when writable, create the tables of) a projection database."""
    if read_only:
        return duckdb.connect(str(path), read_only=True)
    con = duckdb.connect(str(path))
    con.execute(SCHEMA)
    return con


class ProjectionStore:
    """The projector's writer connection: reads the checkpoint, writes batches."""

    def __init__(self, con: duckdb.DuckDBPyConnection, stream: str) -> None:
        self.con = con
        self.stream = stream

    def checkpoint(self) -> int:
        """The last stream sequence whose event is in the tables (0: none yet)."""
        found = self.con.execute("SELECT seq FROM checkpoint WHERE stream = ?", [self.stream]).fetchall()
        return int(found[0][0]) if found else 0

    def load_rows(self, ids: list[str]) -> dict[str, Row]:
        """Current rows of these works (those that exist)."""
        if not ids:
            return {}
        self.con.register("wanted_ids", pa.table({"id": pa.array(ids, pa.string())}))
        try:
            cursor = self.con.execute(f"SELECT {COLUMN_LIST} FROM works WHERE id IN (SELECT id FROM wanted_ids)")
            rows = (dict(zip(WORK_COLUMNS, row)) for row in cursor.fetchall())
            return {row["id"]: row for row in rows}
        finally:
            self.con.unregister("wanted_ids")

    def write(self, batch: Batch) -> None:
        """Write a batch's events, its works' new rows and the checkpoint, atomically."""
        con = self.con
        con.register("batch_events", batch.events_table())
        con.register("batch_works", batch.works_table())
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute("INSERT INTO events SELECT * FROM batch_events")
                if batch.rows:
                    con.execute(f"INSERT OR REPLACE INTO works ({COLUMN_LIST}) SELECT * FROM batch_works")
                con.execute(
                    "INSERT OR REPLACE INTO checkpoint VALUES (?, ?, ?)", [self.stream, batch.last_seq, time.time()]
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.unregister("batch_events")
            con.unregister("batch_works")
