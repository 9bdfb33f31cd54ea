"""The fold in rows: what the projector writes to DuckDB, computed without I/O.

``workflow.core.fold.evolve`` is the definition of a work's state. Replaying a million
events through it is slow, though: decoding a ``Deposited`` builds and validates a whole
``Work``, and every step copies one. The projector instead decodes only the envelope of
each event (the work it carries stays raw JSON, unvalidated: the log only holds events
that were valid when written) and folds it into a small row: the work's last snapshot
plus what later events changed. DuckDB then parses the JSON into columns, in C++, in
bulk (``database.ProjectionStore.write``). ``tests/results/test_projection.py`` checks
with hypothesis that the resulting ``works`` table and ``evolve`` agree on random sequences.

Everything here is pure: bytes in, rows and Arrow tables out.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa

from workflow.core import events as ev
from workflow.core.fold import failure_results
from workflow.core.work import Work

#: Work fields whose values are dicts or free-form lists: stored as JSON text.
JSON_FIELDS = ("parameters", "results", "precursors", "config")
WORK_FIELDS: tuple[str, ...] = tuple(f.name for f in msgspec.structs.fields(Work))
#: Columns of ``works``: every Work field, then the sequence and time of its last event.
WORK_COLUMNS: tuple[str, ...] = (*WORK_FIELDS, "seq", "updated")

#: A folded row: a tuple of ``ROW_COLUMNS`` (immutable: a batch being written shares it).
Row = tuple[Any, ...]
#: A decoded message: ``(seq, logged, subject, data, light event)``.
Decoded = tuple[int, float, str, bytes, Any]
_NULL = b"null"

# -- light events ---------------------------------------------------------------------------
#
# The light form of each event type of ``workflow.core.events``: same tag, only the fields
# the row fold (``apply``) and the events table read, and the heavy ones kept as raw JSON
# (``msgspec.Raw``: sliced out of the message, not parsed). A new event type in the core
# union gets its light form here by itself; ``apply`` must then learn to fold it.

#: Fields read below; any other field of an event is skipped by the decoder.
_READ = frozenset(
    {"work_id", "pipeline", "time", "work", "attempt", "will_retry", "reason", "error", "traceback",
     "results", "products", "plots"}
)
#: Fields kept as raw JSON (DuckDB parses them) ...
_RAW = frozenset({"work", "results", "products", "plots"})
#: ... except where the row fold needs the value: a failure's results merge with its reason.
_DECODED: Mapping[type[ev.Event], frozenset[str]] = {ev.Failed: frozenset({"results"})}


def _light_field(kind: type[ev.Event], info: msgspec.structs.FieldInfo) -> tuple[str, Any, Any]:
    """``(name, type, default)`` of one field of the light form of ``kind``."""
    if info.name in _RAW and info.name not in _DECODED.get(kind, ()):
        required = info.default is msgspec.NODEFAULT and info.default_factory is msgspec.NODEFAULT
        # a default of None or of an empty value: absent or null, both JSON null
        return info.name, msgspec.Raw, msgspec.NODEFAULT if required else msgspec.Raw(_NULL)
    if info.default_factory is not msgspec.NODEFAULT:
        return info.name, info.type, msgspec.field(default_factory=info.default_factory)
    return info.name, info.type, info.default


def _light(kind: type[ev.Event]) -> type[msgspec.Struct]:
    config = kind.__struct_config__
    fields = [_light_field(kind, info) for info in msgspec.structs.fields(kind) if info.name in _READ]
    return msgspec.defstruct(
        kind.__name__, fields, module=__name__, tag_field=config.tag_field, tag=config.tag, kw_only=True,
        gc=False,  # no cycles: the cyclic GC need not track them
    )


#: The light form of each event type of the core union.
LIGHT: dict[type[ev.Event], type[msgspec.Struct]] = {kind: _light(kind) for kind in typing.get_args(ev.AnyEvent)}
Deposited = LIGHT[ev.Deposited]
Requeued = LIGHT[ev.Requeued]
Started = LIGHT[ev.Started]
Succeeded = LIGHT[ev.Succeeded]
Failed = LIGHT[ev.Failed]
Cancelled = LIGHT[ev.Cancelled]
#: A light event: one of ``LIGHT``'s values (built at import, so typed loosely).
LightEvent = Any
_TAGS: dict[type[msgspec.Struct], str] = {light: str(light.__struct_config__.tag) for light in LIGHT.values()}
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(typing.Union[tuple(LIGHT.values())])  # noqa: UP007 (built at run time)
_encoder = msgspec.json.Encoder()


def decode(data: bytes) -> LightEvent:
    """The light form of an event: the envelope parsed, the work kept as raw JSON."""
    return _decoder.decode(data)


def _text(raw: msgspec.Raw) -> bytes | None:
    """Raw JSON as UTF-8 bytes (Arrow takes them as strings); None for null."""
    data = bytes(raw)
    return None if data == _NULL else data


# A row is the work's last snapshot (``base``: the JSON of the work carried by its
# Deposited/Requeued event, or of its row as loaded from the database) plus what later
# events changed. DuckDB turns it into columns (``database.WORKS_FROM_BATCH``): parsing
# JSON there is far cheaper than in Python. ``*_set`` says a field was changed (its new
# value may be null); ``attempt``, ``products``, ``plots``: None means unchanged.
# Rows are plain tuples (building one is much cheaper than a dict), in this order:
ROW_COLUMNS = (
    "id", "base", "status", "attempt", "start", "start_set", "stop", "stop_set",
    "results", "results_set", "products", "plots", "seq", "updated",
)


def apply(row: Row | None, event: LightEvent, seq: int) -> Row | None:
    """The row after ``event`` (mirrors ``fold.evolve``); None if the event cannot apply.

    An event whose work is unknown (its deposit aged out of the log before this
    projection began) or a second deposit cannot be folded; the caller counts and logs it.
    An event type this fold does not know is an error (TypeError), never skipped.
    """
    kind = event.__class__
    if kind is Deposited:
        if row is not None:
            return None
        return (event.work_id, bytes(event.work), "queued", None, None, False, None, False, None, False, None, None,
                seq, event.time)
    if kind is Started:
        if row is None:
            return None
        return (row[0], row[1], "running", event.attempt, event.time, True, None, True, row[8], row[9], row[10],
                row[11], seq, event.time)
    if kind is Succeeded:
        if row is None:
            return None
        products, plots = _text(event.products), _text(event.plots)
        return (row[0], row[1], "success", event.attempt, row[4], row[5], event.time, True, _text(event.results), True,
                row[10] if products is None else products, row[11] if plots is None else plots, seq, event.time)
    if kind is Failed:
        if row is None:
            return None
        results = failure_results(event.results, event.reason, event.error, event.traceback)
        products, plots = _text(event.products), _text(event.plots)
        return (row[0], row[1], "queued" if event.will_retry else "failure", event.attempt, row[4], row[5], event.time,
                True, _encoder.encode(results), True, row[10] if products is None else products,
                row[11] if plots is None else plots, seq, event.time)
    if kind is Cancelled:
        if row is None:
            return None
        return (row[0], row[1], "cancelled", row[3], row[4], row[5], event.time, True, row[8], row[9], row[10],
                row[11], seq, event.time)
    if kind is Requeued:
        if row is None:
            return None
        return (event.work_id, bytes(event.work), "queued", None, None, True, None, True, None, False, None, None,
                seq, event.time)
    raise TypeError(f"the row fold does not know {kind.__name__} events: {event!r}")


def loaded_row(work_id: str, work_json: str, status: str, seq: int, updated: float) -> Row:
    """A row from the database (its work as JSON), to fold further events onto."""
    return (work_id, work_json, status, None, None, False, None, False, None, False, None, None, seq, updated)


def row_to_work(row: Mapping[str, Any]) -> Work:
    """The Work a ``works`` table row (a mapping of its columns) stands for (JSON columns parsed)."""
    payload = {name: row[name] for name in WORK_FIELDS}
    for name in JSON_FIELDS:
        value = payload[name]
        if isinstance(value, str):
            payload[name] = msgspec.json.decode(value)
    return msgspec.convert(payload, type=Work)


# -- batches ------------------------------------------------------------------------------

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

    ``events`` are ``(seq, logged, subject, data, event)`` tuples; ``rows`` maps a work id
    to its state after the batch (only works the batch touched).
    """

    last_seq: int = 0
    events: list[Decoded] = field(default_factory=list)
    rows: dict[str, Row] = field(default_factory=dict)
    #: Works that had a row before this batch: their old row is replaced.
    replaced: list[str] = field(default_factory=list)
    unfoldable: list[int] = field(default_factory=list)
    _tables: tuple[pa.Table, pa.Table] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.events)

    def fold(self, decoded: list[Decoded], lookup: Callable[[str], Row | None]) -> None:
        """Record decoded ``(seq, logged, subject, data, event)`` events, in order.

        ``lookup(work_id)`` is a work's state before this batch (None: unknown), asked
        only for works not already in ``rows``.
        """
        self.events.extend(decoded)
        rows = self.rows
        replaced = self.replaced
        unfoldable = self.unfoldable
        for seq, _, _, _, event in decoded:
            work_id = event.work_id
            state = rows.get(work_id)
            if state is None:
                state = lookup(work_id)
                if state is not None:
                    replaced.append(work_id)
            after = apply(state, event, seq)
            if after is None:
                unfoldable.append(seq)
            else:
                rows[work_id] = after
        if decoded:
            self.last_seq = decoded[-1][0]

    def tables(self) -> tuple[pa.Table, pa.Table]:
        """The events and rows tables (built once: the projector builds them on the thread
        that folds, so that the writing thread only waits for DuckDB)."""
        if self._tables is None:
            self._tables = self.events_table(), self.rows_table()
        return self._tables

    def events_table(self) -> pa.Table:
        return pa.Table.from_batches(
            [_events_batch(self.events[i : i + _CHUNK]) for i in range(0, len(self.events), _CHUNK)], EVENTS_SCHEMA
        )

    def rows_table(self) -> pa.Table:
        rows = list(self.rows.values())
        return pa.Table.from_batches(
            [_rows_batch(rows[i : i + _CHUNK]) for i in range(0, len(rows), _CHUNK)], ROWS_SCHEMA
        )


#: Rows per Arrow record batch. Each conversion holds the GIL throughout; short ones let
#: the thread writing the previous batch (DuckDB, which takes the GIL back now and then)
#: and the thread reading the log run in between.
_CHUNK = 8192


def _events_batch(events: list[Decoded]) -> pa.RecordBatch:
    light = [e[4] for e in events]
    return pa.RecordBatch.from_arrays(
        [pa.array([e[0] for e in events], pa.int64()), pa.array([e[1] for e in events], pa.float64()),
         pa.array([e.time for e in light], pa.float64()), pa.array([e.work_id for e in light], pa.string()),
         pa.array([e.pipeline for e in light], pa.string()),
         pa.array([_TAGS[e.__class__] for e in light], pa.string()),
         pa.array([getattr(e, "attempt", None) for e in light], pa.int32()),
         pa.array([e[2] for e in events], pa.string()), pa.array([e[3] for e in events], pa.string())],
        schema=EVENTS_SCHEMA,
    )


def _rows_batch(rows: list[Row]) -> pa.RecordBatch:
    columns = zip(*rows, strict=True)  # every row has every column
    return pa.RecordBatch.from_arrays(
        [pa.array(column, type) for column, type in zip(columns, ROWS_SCHEMA.types, strict=False)], schema=ROWS_SCHEMA
    )
