"""The fold in rows: what the projector writes to DuckDB, computed without I/O.

``workflow.fold.evolve`` is the definition of a work's state. Replaying a million events
through it is slow, though: decoding a ``Deposited`` builds and validates a whole
``Work``, and every step copies one. The projector instead decodes events into light
structs (dict-valued fields kept as raw JSON, no validation: the log only holds events
that were valid when written) and folds them into plain row dicts, one key per column of
the ``works`` table. ``tests/test_projection.py`` checks with hypothesis that this fold
and ``evolve`` agree on random event sequences.

Everything here is pure: bytes in, rows and Arrow tables out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa

from workflow.work import Work

#: Work fields whose values are dicts or free-form lists: stored as JSON text.
JSON_FIELDS = ("parameters", "results", "precursors", "config")
#: Work fields that are lists of strings or integers: stored as DuckDB lists.
LIST_FIELDS = ("event", "tags", "group", "products", "plots", "command")
WORK_FIELDS: tuple[str, ...] = tuple(f.name for f in msgspec.structs.fields(Work))
#: Columns of ``works``: every Work field, then the sequence and time of its last event.
WORK_COLUMNS: tuple[str, ...] = (*WORK_FIELDS, "seq", "updated")
EVENT_COLUMNS = ("seq", "logged", "time", "work_id", "pipeline", "type", "attempt", "subject", "payload")

Row = dict[str, Any]
_NULL = b"null"


class WorkRow(msgspec.Struct, kw_only=True):
    """A Work as carried by Deposited/Requeued, decoded without validation."""

    pipeline: str
    parameters: msgspec.Raw = msgspec.Raw(_NULL)
    results: msgspec.Raw = msgspec.Raw(_NULL)
    path: str = "."
    event: list[int] | None = None
    tags: list[str] | None = None
    group: list[str] | None = None
    timeout: int = 3600
    retries: int = 2
    priority: int = 3
    products: list[str] | None = None
    plots: list[str] | None = None
    site: str = "local"
    user: str | None = None
    archive: bool = True
    precursors: msgspec.Raw = msgspec.Raw(_NULL)
    config: msgspec.Raw = msgspec.Raw(_NULL)
    function: str | None = None
    command: list[str] | None = None
    id: str | None = None
    creation: float | None = None
    start: float | None = None
    stop: float | None = None
    attempt: int = 0
    status: str = "created"


class _Light(msgspec.Struct, kw_only=True, tag_field="type"):
    work_id: str
    pipeline: str
    time: float


class Deposited(_Light, kw_only=True, tag="deposited"):
    work: WorkRow


class Requeued(_Light, kw_only=True, tag="requeued"):
    work: WorkRow


class Started(_Light, kw_only=True, tag="started"):
    attempt: int


class Succeeded(_Light, kw_only=True, tag="succeeded"):
    attempt: int
    results: msgspec.Raw = msgspec.Raw(_NULL)
    products: list[str] | None = None
    plots: list[str] | None = None


class Failed(_Light, kw_only=True, tag="failed"):
    attempt: int
    will_retry: bool
    reason: str
    error: str | None = None
    traceback: str | None = None
    results: dict[str, Any] | None = None
    products: list[str] | None = None
    plots: list[str] | None = None


class Cancelled(_Light, kw_only=True, tag="cancelled"):
    pass


LightEvent = Deposited | Requeued | Started | Succeeded | Failed | Cancelled
_decoder = msgspec.json.Decoder(LightEvent)
_encoder = msgspec.json.Encoder()


def decode(data: bytes) -> LightEvent:
    """The light form of an event (fields the fold does not need are skipped)."""
    return _decoder.decode(data)


def _json(raw: msgspec.Raw) -> str | None:
    data = bytes(raw)
    return None if data == _NULL else data.decode()


def _work_row(work: WorkRow, work_id: str) -> Row:
    row = msgspec.structs.asdict(work)
    for name in JSON_FIELDS:
        row[name] = _json(row[name])
    row["id"] = work_id
    row["status"] = "queued"
    return row


def apply(row: Row | None, event: LightEvent, seq: int) -> Row | None:
    """The row after ``event`` (mirrors ``fold.evolve``); None if the event cannot apply.

    An event whose work is unknown (its deposit aged out of the log before this
    projection began) or a second deposit cannot be folded; the caller counts and logs it.
    """
    match event:
        case Deposited():
            if row is not None:
                return None
            row = _work_row(event.work, event.work_id)
        case Requeued():
            if row is None:
                return None
            row = _work_row(event.work, event.work_id)
            row["start"] = None
            row["stop"] = None
        case _ if row is None:
            return None
        case Started():
            row = dict(row, status="running", attempt=event.attempt, start=event.time, stop=None)
        case Succeeded():
            row = dict(row, status="success", attempt=event.attempt, results=_json(event.results), stop=event.time)
            if event.products is not None:
                row["products"] = event.products
            if event.plots is not None:
                row["plots"] = event.plots
        case Failed():
            results = dict(event.results or {})
            results["error"] = event.error
            results["reason"] = event.reason
            if event.traceback:
                results["traceback"] = event.traceback
            row = dict(
                row,
                status="queued" if event.will_retry else "failure",
                attempt=event.attempt,
                results=_encoder.encode(results).decode(),
                stop=event.time,
            )
            if event.products is not None:
                row["products"] = event.products
            if event.plots is not None:
                row["plots"] = event.plots
        case Cancelled():
            row = dict(row, status="cancelled", stop=event.time)
    row["seq"] = seq
    row["updated"] = event.time
    return row


def row_to_work(row: Row) -> Work:
    """The Work a row stands for (JSON columns parsed); used by tests and ``get``."""
    payload = {name: row[name] for name in WORK_FIELDS}
    for name in JSON_FIELDS:
        value = payload[name]
        if isinstance(value, str):
            payload[name] = msgspec.json.decode(value)
    return msgspec.convert(payload, type=Work)


# -- batches ------------------------------------------------------------------------------

_TEXTS = pa.list_(pa.string())
_ARROW_TYPES = {
    "event": pa.list_(pa.int64()), "tags": _TEXTS, "group": _TEXTS, "products": _TEXTS, "plots": _TEXTS,
    "command": _TEXTS, "timeout": pa.int32(), "retries": pa.int32(), "priority": pa.int32(),
    "attempt": pa.int32(), "archive": pa.bool_(), "creation": pa.float64(), "start": pa.float64(),
    "stop": pa.float64(), "seq": pa.int64(), "updated": pa.float64(),
}
WORKS_SCHEMA = pa.schema([(name, _ARROW_TYPES.get(name, pa.string())) for name in WORK_COLUMNS])

EVENTS_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()), ("logged", pa.float64()), ("time", pa.float64()), ("work_id", pa.string()),
        ("pipeline", pa.string()), ("type", pa.string()), ("attempt", pa.int32()), ("subject", pa.string()),
        ("payload", pa.string()),
    ]
)


@dataclass
class Batch:
    """Events of one transaction, folded: the events rows and the final row of each work.

    ``rows`` maps a work id to its state after the batch (only works the batch touched);
    ``known`` gives the state before the batch of works not deposited in it (the caller
    loads them from the database or a cache).
    """

    first_seq: int = 0
    last_seq: int = 0
    events: dict[str, list[Any]] = field(default_factory=lambda: {name: [] for name in EVENT_COLUMNS})
    rows: dict[str, Row] = field(default_factory=dict)
    unfoldable: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events["seq"])

    def add(self, seq: int, logged: float, subject: str, data: bytes, event: LightEvent, before: Row | None) -> None:
        """Record one event; ``before`` is its work's state if not already in ``rows``."""
        if not self.first_seq:
            self.first_seq = seq
        self.last_seq = seq
        columns = self.events
        columns["seq"].append(seq)
        columns["logged"].append(logged)
        columns["time"].append(event.time)
        columns["work_id"].append(event.work_id)
        columns["pipeline"].append(event.pipeline)
        columns["type"].append(event.__struct_config__.tag)
        columns["attempt"].append(getattr(event, "attempt", None))
        columns["subject"].append(subject)
        columns["payload"].append(data.decode())
        state = self.rows.get(event.work_id, before)
        after = apply(state, event, seq)
        if after is None:
            self.unfoldable.append(seq)
        else:
            self.rows[event.work_id] = after

    def events_table(self) -> pa.Table:
        return pa.Table.from_pydict(self.events, schema=EVENTS_SCHEMA)

    def works_table(self) -> pa.Table:
        rows = list(self.rows.values())
        return pa.Table.from_pydict({name: [row[name] for row in rows] for name in WORK_COLUMNS}, schema=WORKS_SCHEMA)
