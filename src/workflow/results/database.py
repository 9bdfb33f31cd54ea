"""The DuckDB read model: tables, the checkpoint, and writing one batch atomically.

Four tables:

- ``works``: one row per work, every ``Work`` field (dicts as JSON, lists as lists,
  times as unix seconds like ``Work``), plus ``seq`` and ``updated``: the stream
  sequence and time of the work's last event;
- ``events``: every event, with its stream sequence, the server's time (``logged``),
  the writer's time, work id, pipeline, type, attempt, subject and the payload (its JSON text, as VARCHAR);
- ``rejected``: every message of the log the projector refused (not an event, a newer
  schema, not allowed by the work's state machine: ``workflow.results.projection``),
  with its sequence, server time, subject, the reason, its first bytes and its size;
- ``checkpoint``: one row, the last stream sequence folded into the tables above.

Every sequence the projection read is in exactly one of ``events`` and ``rejected``.
A batch's events rows, its rejected rows, its works rows and the new checkpoint are
written in **one transaction** (so a replay gives the same ``rejected`` table), so after
a crash the database is at a batch boundary and the projector resumes at ``checkpoint + 1``:
no event is applied twice, none is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import duckdb
import msgspec
import pyarrow as pa

from workflow.core.work import Work
from workflow.results.columns import JSON_FIELDS, WORK_COLUMNS, WORK_FIELDS, quote
from workflow.results.projection import Batch, Row, loaded_row

SCHEMA = """
CREATE TABLE IF NOT EXISTS works (
    id VARCHAR NOT NULL,
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
    notify JSON,
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
    payload VARCHAR -- the event's JSON text (VARCHAR: no validation on insert; read it with ::JSON)
);
CREATE TABLE IF NOT EXISTS rejected (
    seq BIGINT NOT NULL,
    logged DOUBLE,
    subject VARCHAR,
    reason VARCHAR NOT NULL,
    head BLOB, -- the message's first bytes (any bytes: it may not be text)
    size BIGINT
);
CREATE TABLE IF NOT EXISTS other (
    seq BIGINT NOT NULL, -- a message of the log that is not a work's event (a schedule's)
    logged DOUBLE,
    subject VARCHAR,
    payload VARCHAR
);
CREATE TABLE IF NOT EXISTS checkpoint (
    stream VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL,
    updated DOUBLE
);
"""

COLUMN_LIST = ", ".join(quote(c) for c in WORK_COLUMNS)


_SCALAR_TYPES = {"timeout": "INTEGER", "retries": "INTEGER", "priority": "INTEGER", "archive": "BOOLEAN",
                 "creation": "DOUBLE", "start": "DOUBLE", "stop": "DOUBLE", "attempt": "INTEGER"}
_LIST_TYPES = {"event": "BIGINT[]", "tags": "VARCHAR[]", "group": "VARCHAR[]", "command": "VARCHAR[]",
               "products": "VARCHAR[]", "plots": "VARCHAR[]"}
_DEFAULTS = {f.name: f.default for f in msgspec.structs.fields(Work)}
#: How DuckDB parses a work's JSON snapshot in one pass (``from_json``): JSON null is NULL.
_WORK_STRUCTURE = json.dumps(
    {name: "JSON" if name in JSON_FIELDS else _LIST_TYPES.get(name) or _SCALAR_TYPES.get(name, "VARCHAR")
     for name in WORK_FIELDS}
)


def _work_column(name: str) -> str:
    """SQL computing one ``works`` column from a folded row ``w`` and its parsed snapshot ``b``."""
    field = f"b.{quote(name)}"
    if name in ("id", "status"):
        return f"w.{name}"
    # json(): one spelling of each JSON value (numbers as DuckDB writes them), whether it
    # came from an event or from a row loaded back from the table.
    if name == "results":
        return f"json(CASE WHEN w.results_set THEN w.results::JSON ELSE {field} END)"
    if name in JSON_FIELDS:
        return f"json({field})"
    if name in ("products", "plots"):
        return f"coalesce(CAST(w.{name}::JSON AS VARCHAR[]), {field})"
    if name in ("start", "stop"):
        return f"CASE WHEN w.{name}_set THEN w.{name} ELSE {field} END"
    if name == "attempt":
        return f"coalesce(w.attempt, {field}, 0)"
    default = _DEFAULTS[name]
    if default is msgspec.NODEFAULT or default is None:
        return field
    literal = str(default).upper() if isinstance(default, bool) else repr(default)
    return f"coalesce({field}, {literal})"  # a field an old event lacks gets Work's default


#: The new ``works`` rows of a batch, from its folded rows (registered as ``batch_rows``).
WORKS_FROM_BATCH = (
    f"SELECT {', '.join(_work_column(n) for n in WORK_FIELDS)}, w.seq, w.updated "
    f"FROM (SELECT *, from_json(base, '{_WORK_STRUCTURE}') AS b FROM batch_rows) w"
)
#: The ``events`` rows of a batch (registered as ``batch_events``): its envelope columns
#: come from the decoding in Python, so DuckDB does not parse the payloads again.
EVENTS_FROM_BATCH = "SELECT seq, logged, time, work_id, pipeline, type, attempt, subject, payload FROM batch_events"
#: A work's current state as JSON with its status, sequence and time (to fold onto).
_LOAD = (
    "SELECT id, to_json({" + ", ".join(f"'{n}': {quote(n)}" for n in WORK_FIELDS) + "}), status, seq, updated "
    "FROM works WHERE id BETWEEN ? AND ? AND id IN (SELECT id FROM wanted_ids)"
)


#: The read model's memory limit (DuckDB's ``memory_limit``) unless WORKFLOW_DUCKDB_MEMORY says.
DEFAULT_MEMORY = "1GB"


def connect(path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and, when writable, create the tables of) a projection database."""
    if read_only:
        return duckdb.connect(str(path), read_only=True)
    con = duckdb.connect(str(path))
    con.execute(SCHEMA)
    # A read model made before works had ``notify``: the column is added (empty: no work
    # could carry it then), so it keeps folding the log where it stopped.
    con.execute("ALTER TABLE works ADD COLUMN IF NOT EXISTS notify JSON")
    # Fewer, larger checkpoints of the write-ahead log: a batch is ~10 MB while catching up.
    con.execute("SET checkpoint_threshold = '128MB'")
    # A service draws no progress bars on its output; and DuckDB's buffer cache, which
    # otherwise grows towards 80% of the machine's memory as the read model grows, stays
    # within WORKFLOW_DUCKDB_MEMORY (larger sorts spill to disk instead).
    con.execute("SET enable_progress_bar = false")
    con.execute("SET memory_limit = ?", [os.environ.get("WORKFLOW_DUCKDB_MEMORY", DEFAULT_MEMORY)])
    return con


class ProjectionStore:
    """The projector's writer connection: reads the checkpoint, writes batches."""

    def __init__(self, con: duckdb.DuckDBPyConnection, stream: str) -> None:
        self.con = con
        self.stream = stream
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._checkpointed = False  # whether the checkpoint row exists (``checkpoint`` looks)

    @property
    def reader(self) -> duckdb.DuckDBPyConnection:
        """A second connection to the same database: reads committed rows during a write."""
        if self._reader is None:
            self._reader = self.con.cursor()
        return self._reader

    def checkpoint(self) -> int:
        """The last stream sequence whose event is in the tables (0: none yet)."""
        found = self.con.execute("SELECT seq FROM checkpoint WHERE stream = ?", [self.stream]).fetchall()
        self._checkpointed = bool(found)
        return int(found[0][0]) if found else 0

    def _checkpoint_statement(self, seq: int) -> str:
        """SQL moving the checkpoint to ``seq``: an UPDATE once the row exists (~1 ms of a
        live batch's write, against ~2.4 ms for ``INSERT OR REPLACE``, which goes through
        the primary key's index)."""
        stream, now = _literal(self.stream), repr(time.time())
        if self._checkpointed:
            return f"UPDATE checkpoint SET seq = {int(seq)}, updated = {now} WHERE stream = {stream}"
        return f"INSERT OR REPLACE INTO checkpoint VALUES ({stream}, {int(seq)}, {now})"

    def load_rows(self, ids: list[str], *, committed: bool = False) -> dict[str, Row]:
        """Current rows of these works (those that exist).

        ``committed``: read through ``reader``, so that a batch may be written meanwhile on
        the main connection (whose changes this read does not see).
        """
        if not ids:
            return {}
        con = self.reader if committed else self.con
        con.register("wanted_ids", pa.table({"id": pa.array(ids, pa.string())}))
        try:
            rows = con.execute(_LOAD, [min(ids), max(ids)]).fetchall()
            return {row[0]: loaded_row(*row) for row in rows}
        finally:
            con.unregister("wanted_ids")

    def write(self, batch: Batch) -> None:
        """Write a batch's events, its works' new rows and the checkpoint, atomically.

        The whole transaction is one ``execute`` (one script): each call into DuckDB must
        get the GIL back when it returns, which costs milliseconds while the projector's
        other threads decode and read the log.
        """
        con = self.con
        events, rows, rejected, other = batch.tables()
        con.register("batch_events", events)
        con.register("batch_rows", rows)
        con.register("batch_rejected", rejected)
        con.register("batch_other", other)
        con.register("replaced_ids", pa.table({"id": pa.array(batch.replaced, pa.string())}))
        statements = ["BEGIN TRANSACTION", f"INSERT INTO events {EVENTS_FROM_BATCH}"]
        if batch.rejected:
            statements.append("INSERT INTO rejected SELECT * FROM batch_rejected")
        if batch.other:
            statements.append("INSERT INTO other SELECT * FROM batch_other")
        if batch.replaced:
            # The range lets DuckDB skip row groups by their min/max id (ids are
            # time-sorted ULIDs, and the works a batch changes are mostly recent).
            statements.append(
                f"DELETE FROM works WHERE id BETWEEN {_literal(min(batch.replaced))} AND "
                f"{_literal(max(batch.replaced))} AND id IN (SELECT id FROM replaced_ids)"
            )
        if batch.rows:
            statements.append(f"INSERT INTO works ({COLUMN_LIST}) {WORKS_FROM_BATCH}")
        statements.append(self._checkpoint_statement(batch.last_seq))
        statements.append("COMMIT")
        try:
            con.execute(";\n".join(statements))
            self._checkpointed = True
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # no transaction left open after a failure
                con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("batch_events")
            con.unregister("batch_rows")
            con.unregister("batch_rejected")
            con.unregister("batch_other")
            con.unregister("replaced_ids")


def _literal(text: str) -> str:
    """A string as an SQL literal."""
    return "'" + text.replace("'", "''") + "'"
