"""The fold in rows: what the projector writes to DuckDB, computed without I/O.

``workflow.fold.evolve`` is the definition of a work's state. Replaying a million events
through it is slow, though: decoding a ``Deposited`` builds and validates a whole
``Work``, and every step copies one. The projector instead decodes only the envelope of
each event (the work it carries stays raw JSON, unvalidated: the log only holds events
that were valid when written) and folds it into a small row: the work's last snapshot
plus what later events changed. DuckDB then parses the JSON into columns, in C++, in
bulk (``database.ProjectionStore.write``). ``tests/test_projection.py`` checks with
hypothesis that the resulting ``works`` table and ``evolve`` agree on random sequences.

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
WORK_FIELDS: tuple[str, ...] = tuple(f.name for f in msgspec.structs.fields(Work))
#: Columns of ``works``: every Work field, then the sequence and time of its last event.
WORK_COLUMNS: tuple[str, ...] = (*WORK_FIELDS, "seq", "updated")

Row = dict[str, Any]
_NULL = b"null"


class _Light(msgspec.Struct, kw_only=True, tag_field="type"):
    work_id: str
    pipeline: str
    time: float


class Deposited(_Light, kw_only=True, tag="deposited"):
    work: msgspec.Raw


class Requeued(_Light, kw_only=True, tag="requeued"):
    work: msgspec.Raw


class Started(_Light, kw_only=True, tag="started"):
    attempt: int


class Succeeded(_Light, kw_only=True, tag="succeeded"):
    attempt: int
    results: msgspec.Raw = msgspec.Raw(_NULL)
    products: msgspec.Raw = msgspec.Raw(_NULL)
    plots: msgspec.Raw = msgspec.Raw(_NULL)


class Failed(_Light, kw_only=True, tag="failed"):
    attempt: int
    will_retry: bool
    reason: str
    error: str | None = None
    traceback: str | None = None
    results: dict[str, Any] | None = None
    products: msgspec.Raw = msgspec.Raw(_NULL)
    plots: msgspec.Raw = msgspec.Raw(_NULL)


class Cancelled(_Light, kw_only=True, tag="cancelled"):
    pass


LightEvent = Deposited | Requeued | Started | Succeeded | Failed | Cancelled
_TAGS = {kind: kind.__struct_config__.tag for kind in (Deposited, Requeued, Started, Succeeded, Failed, Cancelled)}
_decoder = msgspec.json.Decoder(LightEvent)
_encoder = msgspec.json.Encoder()


def decode(data: bytes) -> LightEvent:
    """The light form of an event: the envelope parsed, the work kept as raw JSON."""
    return _decoder.decode(data)


def _text(raw: msgspec.Raw) -> str | None:
    data = bytes(raw)
    return None if data == _NULL else data.decode()


# A row is the work's last snapshot (``base``: the JSON of the work carried by its
# Deposited/Requeued event, or of its row as loaded from the database) plus what later
# events changed. DuckDB turns it into columns (``database.WORKS_FROM_BATCH``): parsing
# JSON there is far cheaper than in Python. ``*_set`` says a field was changed (its new
# value may be null); ``attempt``, ``products``, ``plots``: None means unchanged.
_FRESH = {
    "attempt": None, "start": None, "start_set": False, "stop": None, "stop_set": False,
    "results": None, "results_set": False, "products": None, "plots": None,
}


def apply(row: Row | None, event: LightEvent, seq: int) -> Row | None:
    """The row after ``event`` (mirrors ``fold.evolve``); None if the event cannot apply.

    An event whose work is unknown (its deposit aged out of the log before this
    projection began) or a second deposit cannot be folded; the caller counts and logs it.
    """
    match event:
        case Deposited():
            if row is not None:
                return None
            row = {"id": event.work_id, "base": bytes(event.work).decode(), "status": "queued", **_FRESH}
        case Requeued():
            if row is None:
                return None
            row = {"id": event.work_id, "base": bytes(event.work).decode(), "status": "queued", **_FRESH,
                   "start_set": True, "stop_set": True}
        case _ if row is None:
            return None
        case Started():
            row = dict(row, status="running", attempt=event.attempt, start=event.time, start_set=True,
                       stop=None, stop_set=True)
        case Succeeded():
            row = dict(row, status="success", attempt=event.attempt, results=_text(event.results), results_set=True,
                       stop=event.time, stop_set=True)
            _outputs(row, event)
        case Failed():
            results = dict(event.results or {})
            results["error"] = event.error
            results["reason"] = event.reason
            if event.traceback:
                results["traceback"] = event.traceback
            row = dict(row, status="queued" if event.will_retry else "failure", attempt=event.attempt,
                       results=_encoder.encode(results).decode(), results_set=True, stop=event.time, stop_set=True)
            _outputs(row, event)
        case Cancelled():
            row = dict(row, status="cancelled", stop=event.time, stop_set=True)
    row["seq"] = seq
    row["updated"] = event.time
    return row


def _outputs(row: Row, event: Succeeded | Failed) -> None:
    products, plots = _text(event.products), _text(event.plots)
    if products is not None:
        row["products"] = products
    if plots is not None:
        row["plots"] = plots


def loaded_row(work_id: str, work_json: str, status: str, seq: int, updated: float) -> Row:
    """A row from the database (its work as JSON), to fold further events onto."""
    return {"id": work_id, "base": work_json, "status": status, **_FRESH, "seq": seq, "updated": updated}


def row_to_work(row: Row) -> Work:
    """The Work a ``works`` table row stands for (JSON columns parsed)."""
    payload = {name: row[name] for name in WORK_FIELDS}
    for name in JSON_FIELDS:
        value = payload[name]
        if isinstance(value, str):
            payload[name] = msgspec.json.decode(value)
    return msgspec.convert(payload, type=Work)


# -- batches ------------------------------------------------------------------------------

ROW_COLUMNS = ("id", "base", "status", *_FRESH, "seq", "updated")
ROWS_SCHEMA = pa.schema(
    [
        ("id", pa.string()), ("base", pa.string()), ("status", pa.string()), ("attempt", pa.int32()),
        ("start", pa.float64()), ("start_set", pa.bool_()), ("stop", pa.float64()), ("stop_set", pa.bool_()),
        ("results", pa.string()), ("results_set", pa.bool_()), ("products", pa.string()), ("plots", pa.string()),
        ("seq", pa.int64()), ("updated", pa.float64()),
    ]
)
assert tuple(ROWS_SCHEMA.names) == ROW_COLUMNS
EVENTS_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()), ("logged", pa.float64()), ("time", pa.float64()), ("work_id", pa.string()),
        ("pipeline", pa.string()), ("type", pa.string()), ("attempt", pa.int32()), ("subject", pa.string()),
        ("payload", pa.string()),
    ]
)


@dataclass
class Batch:
    """Events of one transaction, folded: the raw events and the last row of each work.

    ``rows`` maps a work id to its state after the batch (only works the batch touched).
    """

    last_seq: int = 0
    seqs: list[int] = field(default_factory=list)
    logged: list[float] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    payloads: list[str] = field(default_factory=list)
    #: The envelope of each event, as decoded here (DuckDB need not parse the payload).
    times: list[float] = field(default_factory=list)
    work_ids: list[str] = field(default_factory=list)
    pipelines: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    attempts: list[int | None] = field(default_factory=list)
    rows: dict[str, Row] = field(default_factory=dict)
    #: Works that had a row before this batch: their old row is replaced.
    replaced: list[str] = field(default_factory=list)
    unfoldable: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seqs)

    def add(self, seq: int, logged: float, subject: str, data: bytes, event: LightEvent, before: Row | None) -> None:
        """Record one event; ``before`` is its work's state if not already in ``rows``."""
        self.last_seq = seq
        self.seqs.append(seq)
        self.logged.append(logged)
        self.subjects.append(subject)
        self.payloads.append(data.decode())
        work_id = event.work_id
        self.times.append(event.time)
        self.work_ids.append(work_id)
        self.pipelines.append(event.pipeline)
        self.types.append(_TAGS[event.__class__])
        self.attempts.append(getattr(event, "attempt", None))
        state = self.rows.get(work_id)
        if state is None and before is not None:
            state = before
            self.replaced.append(work_id)
        after = apply(state, event, seq)
        if after is None:
            self.unfoldable.append(seq)
        else:
            self.rows[work_id] = after

    def events_table(self) -> pa.Table:
        return pa.Table.from_arrays(
            [pa.array(self.seqs, pa.int64()), pa.array(self.logged, pa.float64()), pa.array(self.times, pa.float64()),
             pa.array(self.work_ids, pa.string()), pa.array(self.pipelines, pa.string()),
             pa.array(self.types, pa.string()), pa.array(self.attempts, pa.int32()),
             pa.array(self.subjects, pa.string()), pa.array(self.payloads, pa.string())],
            schema=EVENTS_SCHEMA,
        )

    def rows_table(self) -> pa.Table:
        rows = list(self.rows.values())
        return pa.Table.from_pydict({name: [row[name] for row in rows] for name in ROW_COLUMNS}, schema=ROWS_SCHEMA)
