"""The fold in rows: what the projector writes to DuckDB, computed without I/O.

``workflow.core.fold.evolve`` is the definition of a work's state. Replaying a million
events through it is slow, though: decoding a ``Deposited`` builds and validates a whole
``Work``, and every step copies one. The projector instead decodes only the envelope of
each event (the work it carries is checked against Work's types but kept as raw JSON)
and folds it into a small row: the work's last snapshot plus what later events changed.
DuckDB then parses the JSON into columns, in C++, in bulk (``database.ProjectionStore.write``).
``tests/results/test_projection.py`` checks with hypothesis that the resulting ``works``
table and ``evolve`` agree on random sequences, valid or not.

**Hostile input.** Anyone allowed to publish on ``wf.>`` can append anything, without
the writers' CAS. ``read`` refuses (ValidationError) whatever the projector must not
fold or could not write: bytes that are not UTF-8 JSON, an unknown type, a wrong field,
a newer schema version, a work that is not a valid Work, an event on another work's
subjects; ``apply`` refuses (None) an event the work's state machine does not allow
(``workflow.core.fold.refusal``). The projector writes each refused message to the
``rejected`` table instead, in the batch's transaction.

Everything here is pure: bytes in, rows and Arrow tables out.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import pyarrow as pa

from workflow.core import events as ev
from workflow.core.errors import ValidationError
from workflow.core.fold import failure_results, refusal
from workflow.core.subjects import PREFIX
from workflow.core.work import NAME_PATTERN, Work
from workflow.results.columns import JSON_FIELDS, WORK_FIELDS

#: A decoded message: ``(seq, logged, subject, data, light event)``.
Decoded = tuple[int, float, str, bytes, Any]
#: A refused message: ``(seq, logged, subject, reason, data)``.
Refused = tuple[int, float, str, str, bytes]
_NULL = b"null"

# -- light events ---------------------------------------------------------------------------
#
# The light form of each event type of ``workflow.core.events``: same tag, only the fields
# the row fold (``apply``) and the events table read, and the heavy ones kept as raw JSON
# (``msgspec.Raw``: sliced out of the message, not parsed). A new event type in the core
# union gets its light form here by itself; ``apply`` must then learn to fold it.

#: Fields read below; any other field of an event is skipped by the decoder.
_READ = frozenset(
    {"work_id", "pipeline", "time", "v", "work", "attempt", "will_retry", "reason", "error", "traceback",
     "results", "products", "plots", "waits"}
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
Deleted = LIGHT[ev.Deleted]
Notified = LIGHT[ev.Notified]
#: A light event: one of ``LIGHT``'s values (built at import, so typed loosely).
LightEvent = Any
#: The core event type of each light one.
CORE: dict[type[msgspec.Struct], type[ev.Event]] = {light: kind for kind, light in LIGHT.items()}
_TAGS: dict[type[msgspec.Struct], str] = {light: str(light.__struct_config__.tag) for light in LIGHT.values()}
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(typing.Union[tuple(LIGHT.values())])  # noqa: UP007 (built at run time)
_encoder = msgspec.json.Encoder()


def _checked_type(info: msgspec.structs.FieldInfo) -> Any:
    """A Work field's type for checking only: free-form values stay raw JSON (cheaper),
    and numbers are bounded to what the ``works`` columns hold."""
    if info.name == "notify":  # small, and its shape is the rule (a webhook key, a channel)
        return info.type
    if info.name in JSON_FIELDS:  # their shape; the values inside stay raw JSON (DuckDB parses them)
        return list[msgspec.Raw] | None if info.name == "precursors" else dict[str, msgspec.Raw] | None
    if info.name == "attempt":
        return ev.Attempt
    if info.name == "event":
        return list[Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]] | None
    if info.name in _NAMES:  # pattern checked in ``_check_name``: a regex per deposit costs ~1 µs
        return Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    return info.type


#: Fields whose values are names (``NAME_PATTERN``), and the names already found valid.
_NAMES = ("pipeline", "site")
_valid_names: set[str] = set()
_NAME = re.compile(NAME_PATTERN)


def _check_name(field: str, name: str) -> None:
    """Refuse a pipeline or site name that is not one subject token (letters, digits, -).
    Names are few, so each is checked once."""
    if name in _valid_names:
        return
    if not _NAME.match(name):
        raise ValidationError("work", f"Expected `str` matching regex {NAME_PATTERN!r} - at `$.{field}`")
    if len(_valid_names) > 100_000:
        _valid_names.clear()
    _valid_names.add(name)


#: Work's fields and types (and bounds), to check the work a deposit carries without
#: building a Work (no ``__post_init__``: its site list is this host's configuration).
_WorkCheck = msgspec.defstruct(
    "WorkCheck",
    [(info.name, _checked_type(info), None if info.default_factory is not msgspec.NODEFAULT else info.default)
     for info in msgspec.structs.fields(Work)],
    kw_only=True, gc=False,
)
_work_decoder = msgspec.json.Decoder(_WorkCheck)
_SURROGATE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def decode(data: bytes) -> LightEvent:
    """The light form of an event: the envelope parsed, the work checked and kept as raw JSON.

    Raises ValidationError (its message is the reason the projector records) for anything
    that is not an event this code can fold and DuckDB can store; never another error.
    """
    if not data.isascii():
        try:
            data.decode()
        except UnicodeDecodeError as error:  # Arrow and DuckDB take only UTF-8
            raise ValidationError("event", f"not UTF-8: {error}") from None
    if data.find(b"\\") >= 0 and _SURROGATE.search(data):  # find: ~3x faster than the regex alone
        _check_surrogates(data)
    try:
        event = _decoder.decode(data)
    except msgspec.DecodeError as error:
        raise ValidationError("event", str(error)) from None
    ev.check_version(event.v)
    kind = event.__class__
    if kind is Deposited or kind is Requeued:
        _check_work(event)
    return event


def read(subject: str, data: bytes) -> LightEvent:
    """``decode``, and refuse an event published on another work's subjects (which would
    escape that work's CAS: the server checks the subject, not the payload)."""
    event = decode(data)
    if not subject.startswith(f"{PREFIX}.{event.pipeline}.{event.work_id}."):
        raise ValidationError(
            "subject", f"an event of work {event.work_id} ({event.pipeline}) published on another work's subject"
        )
    return event


def _check_work(event: LightEvent) -> None:
    """The work a Deposited or Requeued carries: a valid Work of the event's pipeline."""
    try:
        work: Any = _work_decoder.decode(event.work)
    except msgspec.DecodeError as error:
        raise ValidationError("work", str(error)) from None
    _check_name("pipeline", work.pipeline)
    _check_name("site", work.site)
    if work.pipeline != event.pipeline:
        raise ValidationError("work", f"the work's pipeline {work.pipeline!r} is not the event's {event.pipeline!r}")


def _check_surrogates(data: bytes) -> None:
    """Refuse a lone UTF-16 surrogate escape (``\\ud800``): DuckDB's JSON parser refuses
    it, which would fail the whole batch. Rare (our encoder never escapes), so slow is fine."""
    try:
        json.dumps(json.loads(data), ensure_ascii=False).encode()
    except ValueError as error:  # UnicodeError and JSONDecodeError are ValueErrors
        raise ValidationError("event", f"invalid string: {error}") from None


def _text(raw: msgspec.Raw) -> bytes | None:
    """Raw JSON as UTF-8 bytes (Arrow takes them as strings); None for null."""
    data = bytes(raw)
    return None if data == _NULL else data


class Row(msgspec.Struct, frozen=True, gc=False):
    """A work's row: its last snapshot plus what later events changed.

    ``base`` is the JSON of the work carried by its Deposited/Requeued event (or of its row
    as loaded from the database); DuckDB turns the row into columns
    (``database.WORKS_FROM_BATCH``): parsing JSON there is far cheaper than in Python.
    ``*_set`` says a field was changed (its new value may be null); ``attempt``,
    ``products``, ``plots``: None means unchanged. A frozen Struct: named, yet built and
    replaced about as fast as a tuple (a batch being written shares it).
    """

    id: str
    base: bytes | str
    status: str
    seq: int  # of the event that made this row
    updated: float  # that event's time
    attempt: int | None = None
    start: float | None = None
    start_set: bool = False
    stop: float | None = None
    stop_set: bool = False
    results: bytes | None = None
    results_set: bool = False
    products: bytes | None = None
    plots: bytes | None = None


ROW_COLUMNS: tuple[str, ...] = Row.__struct_fields__
_replace = msgspec.structs.replace


def _refusal(status: str | None, kind: type[msgspec.Struct]) -> str | None:
    """``fold.refusal`` for a light event type (TypeError for a type this fold does not know)."""
    core = CORE.get(kind)
    if core is None:
        raise TypeError(f"the row fold does not know {kind.__name__} events")
    return refusal(status, core)


#: ``_refusal`` of each (status, light event type) met so far: a pure function of few
#: values, asked once per event (a dict lookup instead of the state machine's comparisons).
_refused: dict[tuple[str | None, type[msgspec.Struct]], str | None] = {}
_UNKNOWN = object()


def apply(row: Row | None, event: LightEvent, seq: int) -> Row | None:
    """The row after ``event`` (mirrors ``fold.evolve``); None if the event cannot apply.

    The state machine's one guard is ``fold.refusal``, as in ``evolve``: None for an event
    of an unknown work (never deposited, or its deposit aged out of the log before this
    projection began), a second deposit, an outcome while no attempt runs, anything but a
    Requeued, Notified or Deleted after the work ended. The caller records it as rejected.
    An event type this fold does not know is an error (TypeError), never skipped.
    """
    kind = event.__class__
    status = None if row is None else row.status
    refused = _refused.get((status, kind), _UNKNOWN)
    if refused is _UNKNOWN:  # first time this pair is met
        refused = _refused[(status, kind)] = _refusal(status, kind)
    if refused is not None:
        return None
    time = event.time
    if kind is Deposited:
        waits = event.waits
        if waits is not None:  # in no bucket yet; ``start`` is the earliest it may start
            return Row(id=event.work_id, base=bytes(event.work), status="waiting", start=waits.not_before,
                       start_set=True, stop_set=True, seq=seq, updated=time)
        return Row(event.work_id, bytes(event.work), "queued", seq, time)  # the most common: positional is faster
    assert row is not None  # refusal() allows only a deposit without a row
    if kind is Started:
        return _replace(row, status="running", attempt=event.attempt, start=time, start_set=True, stop=None,
                        stop_set=True, seq=seq, updated=time)
    if kind is Succeeded or kind is Failed:
        if kind is Succeeded:
            status, results = "success", _text(event.results)
        else:
            status = "queued" if event.will_retry else "failure"
            results = _encoder.encode(failure_results(event.results, event.reason, event.error, event.traceback))
        products, plots = _text(event.products), _text(event.plots)
        return _replace(row, status=status, attempt=event.attempt, stop=time, stop_set=True, results=results,
                        results_set=True, products=row.products if products is None else products,
                        plots=row.plots if plots is None else plots, seq=seq, updated=time)
    if kind is Cancelled:
        return _replace(row, status="cancelled", stop=time, stop_set=True, seq=seq, updated=time)
    if kind is Deleted:  # it keeps its fields, hidden by its status
        return _replace(row, status="deleted", seq=seq, updated=time)
    if kind is Notified:  # a message sent about the work: nothing of the work changes
        return _replace(row, seq=seq, updated=time)
    # Requeued: a new snapshot of the work; its last run's times and results are cleared
    return Row(id=event.work_id, base=bytes(event.work), status="queued", start_set=True, stop_set=True, seq=seq,
               updated=time)


def loaded_row(work_id: str, work_json: str, status: str, seq: int, updated: float) -> Row:
    """A row from the database (its work as JSON), to fold further events onto."""
    return Row(work_id, work_json, status, seq, updated)


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
        ("id", pa.string()), ("base", pa.string()), ("status", pa.string()), ("seq", pa.int64()),
        ("updated", pa.float64()), ("attempt", pa.int32()), ("start", pa.float64()), ("start_set", pa.bool_()),
        ("stop", pa.float64()), ("stop_set", pa.bool_()), ("results", pa.string()), ("results_set", pa.bool_()),
        ("products", pa.string()), ("plots", pa.string()),
    ]
)
assert tuple(ROWS_SCHEMA.names) == ROW_COLUMNS
#: How much of a refused message the ``rejected`` table keeps (enough to recognise it).
REJECTED_HEAD = 256
REJECTED_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()), ("logged", pa.float64()), ("subject", pa.string()), ("reason", pa.string()),
        ("head", pa.binary()), ("size", pa.int64()),
    ]
)
#: Messages of the log that are not a work's events (a schedule's: ``core.schedules``).
OTHER_SCHEMA = pa.schema(
    [("seq", pa.int64()), ("logged", pa.float64()), ("subject", pa.string()), ("payload", pa.string())]
)
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

    ``events`` are the ``(seq, logged, subject, data, event)`` tuples folded; ``rows`` maps
    a work id to its state after the batch (only works the batch touched); ``rejected``
    the messages refused, ``(seq, logged, subject, reason, data)``. Every message of the
    batch is in exactly one of ``events`` and ``rejected``.
    """

    last_seq: int = 0
    events: list[Decoded] = field(default_factory=list)
    rows: dict[str, Row] = field(default_factory=dict)
    #: Works that had a row before this batch: their old row is replaced.
    replaced: list[str] = field(default_factory=list)
    rejected: list[Refused] = field(default_factory=list)
    #: Messages that are not a work's events (a schedule's), ``(seq, logged, subject, data)``:
    #: kept in the ``other`` table, so every sequence read is accounted for.
    other: list[tuple[int, float, str, bytes]] = field(default_factory=list)
    _tables: tuple[pa.Table, pa.Table, pa.Table, pa.Table] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.events) + len(self.rejected) + len(self.other)

    def fold(self, decoded: list[Decoded], lookup: Callable[[str], Row | None]) -> None:
        """Record decoded ``(seq, logged, subject, data, event)`` events, in order.

        ``lookup(work_id)`` is a work's state before this batch (None: unknown), asked
        only for works not already in ``rows``. An event ``apply`` refuses goes to
        ``rejected``, with the reason ``fold.refusal`` gives.
        """
        rows = self.rows
        replaced = self.replaced
        accepted = self.events.append
        for message in decoded:
            seq, _, _, _, event = message
            work_id = event.work_id
            state = rows.get(work_id)
            if state is None:
                state = lookup(work_id)
                if state is not None:  # its old row is replaced (by itself, if this event is refused)
                    replaced.append(work_id)
                    rows[work_id] = state
            after = apply(state, event, seq)
            if after is None:
                self.refuse(message, state)
            else:
                rows[work_id] = after
                accepted(message)
        if decoded:
            self.last_seq = max(self.last_seq, decoded[-1][0])

    def refuse(self, message: Decoded, state: Row | None) -> None:
        """Record a decoded event ``apply`` refused for a work in ``state``."""
        seq, logged, subject, data, event = message
        reason = refusal(None if state is None else state.status, CORE[event.__class__])
        self.rejected.append((seq, logged, subject, f"state: {reason}", data))

    def tables(self) -> tuple[pa.Table, pa.Table, pa.Table, pa.Table]:
        """The events, rows, rejected and other tables (built once: the projector builds
        them on the thread that folds, so that the writing thread only waits for DuckDB)."""
        if self._tables is None:
            self._tables = self.events_table(), self.rows_table(), self.rejected_table(), self.other_table()
        return self._tables

    def other_table(self) -> pa.Table:
        return pa.Table.from_pydict(
            {"seq": [o[0] for o in self.other], "logged": [o[1] for o in self.other],
             "subject": [o[2] for o in self.other],
             "payload": [o[3].decode("utf-8", "replace") for o in self.other]},
            schema=OTHER_SCHEMA,
        )

    def rejected_table(self) -> pa.Table:
        rejected = sorted(self.rejected)
        return pa.Table.from_pydict(
            {"seq": [r[0] for r in rejected], "logged": [r[1] for r in rejected], "subject": [r[2] for r in rejected],
             "reason": [r[3] for r in rejected], "head": [r[4][:REJECTED_HEAD] for r in rejected],
             "size": [len(r[4]) for r in rejected]},
            schema=REJECTED_SCHEMA,
        )

    def events_table(self) -> pa.Table:
        return pa.Table.from_batches(
            [_events_batch(self.events[i : i + _CHUNK]) for i in range(0, len(self.events), _CHUNK)], EVENTS_SCHEMA
        )

    def rows_table(self) -> pa.Table:
        rows = list(self.rows.values())
        return pa.Table.from_batches(
            [_rows_batch(rows[i : i + _CHUNK]) for i in range(0, len(rows), _CHUNK)], ROWS_SCHEMA
        )


_astuple = msgspec.structs.astuple
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
    columns = zip(*map(_astuple, rows), strict=True)  # every row has every column
    return pa.RecordBatch.from_arrays(
        [pa.array(column, type) for column, type in zip(columns, ROWS_SCHEMA.types, strict=False)], schema=ROWS_SCHEMA
    )
