"""Questions to the read model, as parameters, and the SQL they become.

Nothing from the network ever becomes SQL text: a request is decoded into the Structs
below (unknown fields refused, every value checked against its type and bounds), column
names come from fixed lists, and values travel as bound parameters. Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from workflow.core.errors import NotFoundError, ValidationError, WorkflowError
from workflow.core.filters import WorkFilter, checked
from workflow.core.status import HIDDEN, LOGGED
from workflow.core.work import Pipeline
from workflow.results.columns import JSON_FIELDS, WORK_COLUMNS, WORK_FIELDS, quote

#: The service's name, subjects and error headers: the wire contract of both sides.
SERVICE = "workflow-results"
SUBJECT = "workflow.results"
QUEUE_GROUP = "workflow-results"
VERSION = "1.0.0"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"

MAX_LIMIT = 10_000
#: Columns a query may be ordered by (prefix ``-`` for descending).
ORDERABLE = (
    "creation", "start", "stop", "updated", "seq", "priority", "attempt", "pipeline", "status", "site", "user", "id",
)
Limit = Annotated[int, msgspec.Meta(ge=0, le=MAX_LIMIT)]
Offset = Annotated[int, msgspec.Meta(ge=0)]
Wait = Annotated[float, msgspec.Meta(ge=0, le=60)]
MinSeq = Annotated[int, msgspec.Meta(ge=0)]
#: How many minutes a throughput question may cover (one day).
MAX_MINUTES = 1440


class Consistency(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``min_seq``: answer only once the projection holds every event up to it (waiting
    at most ``wait`` seconds): a reader who just wrote sees its own write."""

    min_seq: MinSeq | None = None
    wait: Wait = 5.0


class Filters(WorkFilter, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A count's request: the core's filter, and when to answer.

    The filter is :class:`~workflow.core.filters.WorkFilter` itself, one flat object on the
    wire as it always was. The two fields of :class:`Consistency` are written again here,
    not inherited: a msgspec Struct has one base with fields (two bases with fields are an
    "instance lay-out conflict"), and nesting the filter would change the wire. A test
    holds them equal."""

    min_seq: MinSeq | None = None
    wait: Wait = 5.0


class Query(Filters, kw_only=True, frozen=True, forbid_unknown_fields=True):
    limit: Limit = 100
    offset: Offset = 0
    order: str = "-creation"
    fields: list[str] | None = None


class ById(Consistency, kw_only=True, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Throughput(Consistency, kw_only=True, forbid_unknown_fields=True):
    """How many works finished (``stop``) in each of the ``minutes`` minutes before
    ``until`` (unix seconds; the service's clock when not given), optionally of some pipelines."""

    minutes: Annotated[int, msgspec.Meta(ge=1, le=MAX_MINUTES)] = 60
    until: float | None = None
    pipeline: list[Pipeline] | None = None


def parse(data: bytes, kind: type[msgspec.Struct]) -> Any:
    """Decode and check a request; a bad one is a ValidationError naming the field."""
    try:
        request = msgspec.json.decode(data or b"{}", type=kind)
    except msgspec.ValidationError as error:
        message = str(error)
        field = "request"
        if " - at `$." in message:
            message, _, where = message.partition(" - at `$.")
            field = where.split("`")[0].split("[")[0]
        if issubclass(kind, WorkFilter) and field in WorkFilter.__struct_fields__:
            _check_filter(data, field)  # the core's words for it: the Work field's message
        raise ValidationError(field, message) from None
    except msgspec.DecodeError as error:
        raise ValidationError("request", f"not JSON: {error}") from None
    if isinstance(request, Query):
        order_clause(request.order)
        select_list(request.fields)
    return request


def _check_filter(data: bytes, field: str) -> None:
    """Raise the core's ValidationError for the request's value of filter ``field``, the
    same a client's :meth:`~workflow.core.filters.WorkFilter.of` raises."""
    request = msgspec.json.decode(data)
    if isinstance(request, dict) and field in request:
        checked(field, request[field])


def where(filters: WorkFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (with ``?`` placeholders) and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []

    def any_of(column: str, values: list[Any] | None) -> None:
        if values:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)

    any_of("pipeline", filters.pipeline)
    any_of("status", filters.status)
    any_of("site", filters.site)
    if filters.user is not None:
        clauses.append('"user" = ?')
        params.append(filters.user)
    if filters.tags:
        clauses.append("list_has_all(tags, ?::VARCHAR[])")
        params.append(filters.tags)
    if filters.event:
        clauses.append("list_has_any(event, ?::BIGINT[])")
        params.append(filters.event)
    if filters.any_tags:
        clauses.append("list_has_any(tags, ?::VARCHAR[])")
        params.append(filters.any_tags)
    if filters.parent is not None:
        clauses.append("json_extract_string(config, '$.parent') = ?")
        params.append(filters.parent)
    any_of("priority", filters.priority)
    if filters.precursor is not None:
        # most works have no precursors: the NULL test skips them before any JSON is read
        clauses.append("precursors IS NOT NULL AND list_contains(CAST(precursors AS VARCHAR[]), ?)")
        params.append(filters.precursor)
    if filters.since is not None:
        clauses.append("creation >= ?")
        params.append(filters.since)
    if filters.until is not None:
        clauses.append("creation < ?")
        params.append(filters.until)
    if filters.id_prefix is not None:
        clauses.append("starts_with(id, ?)")
        params.append(filters.id_prefix)
    if filters.after_id is not None:
        clauses.append("id > ?")
        params.append(filters.after_id)
    if not filters.include_deleted and not (filters.status and HIDDEN & set(filters.status)):
        clauses.append(f"status NOT IN ({', '.join(repr(s) for s in sorted(HIDDEN))})")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


#: The order buckets hand works out in: highest priority first, then oldest (a filtered
#: withdraw asks for its candidates in it).
QUEUE_ORDER = "queue"


def order_clause(order: str) -> str:
    if order == QUEUE_ORDER:
        return " ORDER BY priority DESC, creation ASC NULLS LAST, id ASC"
    column = order.removeprefix("-")
    if column not in ORDERABLE:
        raise ValidationError(
            "order", f"cannot order by {order!r}; use one of {', '.join(ORDERABLE)} (prefix - for descending)"
        )
    direction = "DESC" if order.startswith("-") else "ASC"
    tiebreak = "" if column == "id" else f", id {direction}"
    return f" ORDER BY {quote(column)} {direction} NULLS LAST{tiebreak}"


def select_list(fields: list[str] | None) -> str:
    """A DuckDB struct literal of the chosen columns, turned into one JSON object per row."""
    chosen = fields or list(WORK_FIELDS)
    unknown = [name for name in chosen if name not in WORK_COLUMNS]
    if unknown:
        raise ValidationError("fields", f"unknown field(s) {', '.join(unknown)}; fields are {', '.join(WORK_COLUMNS)}")
    return "to_json({" + ", ".join(f"'{name}': {quote(name)}" for name in dict.fromkeys(chosen)) + "})"


def query_sql(query: Query) -> tuple[str, list[Any]]:
    clause, params = where(query)
    sql = f"SELECT {select_list(query.fields)} FROM works{clause}{order_clause(query.order)} LIMIT ? OFFSET ?"
    return sql, [*params, query.limit, query.offset]


def count_sql(filters: WorkFilter) -> tuple[str, list[Any]]:
    clause, params = where(filters)
    return f"SELECT count(*) FROM works{clause}", params


def throughput_sql(request: Throughput, until: float) -> tuple[str, list[Any]]:
    """Finished works per minute before ``until``: rows of (minute index from the oldest, count)."""
    since = until - 60 * request.minutes
    sql = ("SELECT CAST(floor((stop - ?) / 60) AS INTEGER) AS minute, count(*) FROM works "
           "WHERE stop >= ? AND stop < ?")
    params: list[Any] = [since, since, until]
    if request.pipeline:
        sql += f" AND pipeline IN ({', '.join('?' * len(request.pipeline))})"
        params.extend(request.pipeline)
    return sql + " GROUP BY minute", params


def per_minute(rows: list[tuple[Any, ...]], minutes: int) -> list[int]:
    """The rows of :func:`throughput_sql` as one count per minute, oldest first, zeros filled in."""
    counts = [0] * minutes
    for minute, count in rows:
        if 0 <= minute < minutes:
            counts[minute] += count
    return counts


#: Per pipeline: how many works, and how many in each status (``created`` never reaches the log).
PIPELINE_STATUSES = LOGGED
PIPELINES_SQL = (
    "SELECT pipeline, count(*) AS total, "
    + ", ".join(f"count(*) FILTER (WHERE status = '{s}') AS {s}" for s in PIPELINE_STATUSES)
    + f" FROM works WHERE status NOT IN ({', '.join(repr(s) for s in sorted(HIDDEN))})"
    + " GROUP BY pipeline ORDER BY pipeline"
)
#: Per bucket (pipeline, site, priority): the works queued in it now, the ones that can run
#: (a retry once its delay is over). Its consumer's pending messages count more: those of
#: works cancelled, deleted or moved since they were queued, until a worker drops them.
BUCKETS_SQL = (
    "SELECT pipeline, site, priority, count(*) FROM works WHERE status = 'queued' "
    "GROUP BY pipeline, site, priority ORDER BY pipeline, priority DESC, site"
)
GET_SQL = f"SELECT {select_list(None)} FROM works WHERE id = ?"
HISTORY_SQL = "SELECT seq, subject, payload FROM events WHERE work_id = ? ORDER BY seq"
assert set(JSON_FIELDS) <= set(WORK_FIELDS)


def raise_for_error(headers: dict[str, str] | None) -> None:
    """The service's error answer (its headers) as our error: 400 a ValidationError naming
    the field, 404 a NotFoundError, anything else a WorkflowError. Both the queries' client
    and the export's use it, so an error reads the same whichever asked."""
    code = (headers or {}).get(ERROR_CODE_HEADER)
    if code is None:
        return
    message = (headers or {}).get(ERROR_HEADER, "")
    if code == "400":
        field, _, rest = message.partition(": ")
        raise ValidationError(field, rest or message)
    if code == "404":
        raise NotFoundError(message)
    raise WorkflowError(f"results service: {message} (code {code})")
