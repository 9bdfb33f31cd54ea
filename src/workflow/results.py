"""The results service (in the projector's process) and its client, ``client.results``.

DuckDB has one writer: the projector. Everyone else asks over NATS request/reply: a
``nats.micro`` service named ``workflow-results`` with endpoints under
``workflow.results.`` (``query``, ``count``, ``pipelines``, ``get``, ``history``,
``position``, ``export``) in the queue group ``workflow-results``, so more projector
processes (each with its own database) serve more readers. Requests are JSON
parameters (``workflow.queries``), never SQL.

**Read consistency.** The projection trails the log by one batch (milliseconds on a
live system), so a query right after a write may not see it. Every answer says the
stream sequence it reflects at least (``seq``). A caller that must see its own writes
passes ``fresh=True`` (the client reads the log's last sequence, one cheap request, and
the service answers once it has projected that far), or ``after=SEQ`` with the sequence
an append returned. If the projector cannot catch up within ``wait`` seconds the answer
is an error, never a stale result presented as fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats.errors
from nats.micro import add_service
from nats.micro.request import Request, ServiceError

from workflow import events as ev
from workflow import queries
from workflow.errors import NotFoundError, ValidationError, WorkflowError
from workflow.projection import WORK_FIELDS
from workflow.subjects import STREAM
from workflow.work import Work

if TYPE_CHECKING:
    from workflow.client import Client, Recorded
    from workflow.projector import Projector

log = logging.getLogger("workflow.results")

SERVICE = "workflow-results"
SUBJECT = "workflow.results"
QUEUE_GROUP = "workflow-results"
VERSION = "1.0.0"
_ERROR_CODE = "Nats-Service-Error-Code"
_ERROR = "Nats-Service-Error"


class ResultsService:
    """Answers questions from the projector's DuckDB connection (one cursor per request)."""

    def __init__(self, nc: Any, con: Any, projector: Projector, *, concurrency: int = 4) -> None:
        self.nc = nc
        self.con = con
        self.projector = projector
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task] = set()
        self._service: Any = None

    async def start(self) -> None:
        self._service = await add_service(
            self.nc, name=SERVICE, version=VERSION, queue_group=QUEUE_GROUP,
            description="Queries over the workflow projection (DuckDB): works, counts, histories.",
        )
        group = self._service.add_group(name=SUBJECT, queue_group=QUEUE_GROUP)
        for name, handler in {
            "query": self._query, "count": self._count, "pipelines": self._pipelines, "get": self._get,
            "history": self._history, "position": self._position, "export": self._export,
        }.items():
            await group.add_endpoint(name=name, handler=self._concurrent(handler))

    async def stop(self) -> None:
        if self._service is not None:
            with contextlib.suppress(Exception):
                await self._service.stop()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5)

    def _concurrent(self, handler):
        """Serve each request in its own task: a slow query never holds up the others."""

        async def serve(request: Request) -> None:
            task = asyncio.create_task(self._answer(handler, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return serve

    async def _answer(self, handler, request: Request) -> None:
        try:
            async with self._slots:
                body = await handler(request.data)
            if len(body) > self.nc.max_payload - 1024:
                raise ServiceError("413", f"the answer is {len(body):,} bytes, over the {self.nc.max_payload:,} "
                                          "bytes NATS carries; ask for fewer works (limit) or fewer fields")
            await request.respond(body)
        except ServiceError as error:
            await request.respond_error(error.code, error.description)
        except ValidationError as error:
            await request.respond_error("400", str(error))
        except NotFoundError as error:
            await request.respond_error("404", str(error))
        except Exception as error:  # answer, never leave the caller waiting for a timeout
            log.exception("results request failed")
            await request.respond_error("500", f"{type(error).__name__}: {error}")

    async def _consistent(self, request: queries.Consistency) -> int:
        """Wait for the asked position; the position the answer reflects at least."""
        if request.min_seq is not None and not await self.projector.wait_for(request.min_seq, request.wait):
            raise ServiceError(
                "504", f"the projection is at sequence {self.projector.position}, behind the asked "
                       f"{request.min_seq}, after waiting {request.wait:g}s; try again"
            )
        return self.projector.position

    def _read(self, sql: str, params: list[Any]) -> list[tuple]:
        cursor = self.con.cursor()
        try:
            return cursor.execute(sql, params).fetchall()
        finally:
            cursor.close()

    async def _rows(self, sql: str, params: list[Any]) -> list[tuple]:
        return await asyncio.to_thread(self._read, sql, params)

    async def _query(self, data: bytes) -> bytes:
        request = queries.parse(data, queries.Query)
        seq = await self._consistent(request)
        rows = await self._rows(*queries.query_sql(request))
        return b'{"seq":%d,"works":[' % seq + ",".join(row[0] for row in rows).encode() + b"]}"

    async def _count(self, data: bytes) -> bytes:
        request = queries.parse(data, queries.Filters)
        seq = await self._consistent(request)
        [(count,)] = await self._rows(*queries.count_sql(request))
        return msgspec.json.encode({"seq": seq, "count": count})

    async def _pipelines(self, data: bytes) -> bytes:
        request = queries.parse(data, queries.Consistency)
        seq = await self._consistent(request)
        rows = await self._rows(queries.PIPELINES_SQL, [])
        names = ("total", *queries.PIPELINE_STATUSES)
        return msgspec.json.encode({"seq": seq, "pipelines": {row[0]: dict(zip(names, row[1:])) for row in rows}})

    async def _get(self, data: bytes) -> bytes:
        request = queries.parse(data, queries.ById)
        seq = await self._consistent(request)
        rows = await self._rows(queries.GET_SQL, [request.id])
        if not rows:
            raise NotFoundError(f"no work with id {request.id} (as of sequence {seq})")
        return b'{"seq":%d,"work":' % seq + rows[0][0].encode() + b"}"

    async def _history(self, data: bytes) -> bytes:
        request = queries.parse(data, queries.ById)
        seq = await self._consistent(request)
        rows = await self._rows(queries.HISTORY_SQL, [request.id])
        if not rows:
            raise NotFoundError(f"no work with id {request.id} (as of sequence {seq})")
        events = [b'{"seq":%d,"subject":%s,"event":%s}' % (s, msgspec.json.encode(subject), payload.encode())
                  for s, subject, payload in rows]
        return b'{"seq":%d,"events":[' % seq + b",".join(events) + b"]}"

    async def _position(self, data: bytes) -> bytes:
        return msgspec.json.encode({"seq": self.projector.position, "unfoldable": self.projector.unfoldable})

    async def _export(self, data: bytes) -> bytes:
        request = queries.parse(data, queries.Export)
        directory = Path(request.directory)
        if not directory.is_absolute():
            raise ValidationError("directory", f"give an absolute path on the projector's host, not {request.directory!r}")
        written = await asyncio.to_thread(export_parquet, self.con.cursor(), directory)
        return msgspec.json.encode({"seq": self.projector.position, "files": [str(p) for p in written]})


def export_parquet(con: Any, directory: Path) -> list[Path]:
    """Write ``works``, ``events`` and ``checkpoint`` as Parquet files in ``directory``.

    Refuses to overwrite: an export is a record. Returns the files written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    targets = [directory / f"{table}.parquet" for table in ("works", "events", "checkpoint")]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise ValidationError("directory", f"{', '.join(existing)} already exist; export into a new directory")
    try:
        for table, target in zip(("works", "events", "checkpoint"), targets):
            literal = str(target).replace("'", "''")
            con.execute(f"COPY (SELECT * FROM {table} ORDER BY {'id' if table == 'works' else 'seq'}) "
                        f"TO '{literal}' (FORMAT parquet, COMPRESSION zstd)").fetchall()
    finally:
        con.close()
    return targets


# -- the client side -------------------------------------------------------------------------


def as_unix(moment: float | str | datetime | None, field: str) -> float | None:
    """Unix seconds from a number, a datetime or an ISO-8601 text (naive means UTC)."""
    if moment is None or isinstance(moment, (int, float)):
        return moment
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(field, f"expected an ISO-8601 time like 2026-01-31T12:00:00Z, got {moment!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _listed(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return [value] if isinstance(value, (str, int)) else list(value)


class Results:
    """Queries answered by the results service; ``client.results`` of an open client.

    Every method takes ``fresh=True`` (see everything in the log up to now, including
    your own writes) or ``after=SEQ`` (see at least up to that stream sequence).
    """

    def __init__(self, client: Client, timeout: float = 10.0) -> None:
        self._client = client
        self.timeout = timeout

    async def _call(self, endpoint: str, body: dict[str, Any], fresh: bool = False, after: int | None = None) -> dict:
        if fresh:
            info = await self._client.nc.jetstream().stream_info(STREAM)
            after = max(after or 0, info.state.last_seq)
        if after is not None:
            body["min_seq"] = after
        payload = msgspec.json.encode({k: v for k, v in body.items() if v is not None})
        try:
            reply = await self._client.nc.request(f"{SUBJECT}.{endpoint}", payload, timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise WorkflowError(
                "no results service answers (it runs in `workflow server` or `workflow projector --db FILE`)"
            ) from None
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            raise WorkflowError(f"the results service did not answer {endpoint} within {self.timeout:g}s") from None
        headers = reply.headers or {}
        code = headers.get(_ERROR_CODE)
        if code is not None:
            message = headers.get(_ERROR, "")
            if code == "400":
                field, _, rest = message.partition(": ")
                raise ValidationError(field, rest or message)
            if code == "404":
                raise NotFoundError(message)
            raise WorkflowError(f"results service: {message} (code {code})")
        return msgspec.json.decode(reply.data)

    def _filters(self, pipeline, status, site, user, tags, event, since, until) -> dict[str, Any]:
        return {
            "pipeline": _listed(pipeline), "status": _listed(status), "site": _listed(site), "user": user,
            "tags": _listed(tags), "event": _listed(event),
            "since": as_unix(since, "since"), "until": as_unix(until, "until"),
        }

    async def query(
        self,
        pipeline: str | list[str] | None = None,
        status: str | list[str] | None = None,
        site: str | list[str] | None = None,
        user: str | None = None,
        tags: str | list[str] | None = None,
        event: int | list[int] | None = None,
        since: float | str | datetime | None = None,
        until: float | str | datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        order: str = "-creation",
        fields: list[str] | None = None,
        *,
        fresh: bool = False,
        after: int | None = None,
    ) -> list[Work] | list[dict[str, Any]]:
        """Works matching every filter, newest first by default (``order="creation"``:
        oldest first; any of ``queries.ORDERABLE``, ``-`` for descending).

        Returns Works, or plain dicts of just ``fields`` when given. ``tags``: works with
        all of them; ``event``: works naming any of them; ``since``/``until``: creation time.
        """
        body = self._filters(pipeline, status, site, user, tags, event, since, until)
        body.update(limit=limit, offset=offset, order=order, fields=fields)
        answer = await self._call("query", body, fresh, after)
        if fields is not None:
            return answer["works"]
        return [msgspec.convert(work, type=Work) for work in answer["works"]]

    async def count(
        self,
        pipeline: str | list[str] | None = None,
        status: str | list[str] | None = None,
        site: str | list[str] | None = None,
        user: str | None = None,
        tags: str | list[str] | None = None,
        event: int | list[int] | None = None,
        since: float | str | datetime | None = None,
        until: float | str | datetime | None = None,
        *,
        fresh: bool = False,
        after: int | None = None,
    ) -> int:
        """How many works match every filter (same filters as ``query``)."""
        body = self._filters(pipeline, status, site, user, tags, event, since, until)
        return (await self._call("count", body, fresh, after))["count"]

    async def pipelines(self, *, fresh: bool = False, after: int | None = None) -> dict[str, dict[str, int]]:
        """Per pipeline: total, queued, running, success, failure, cancelled."""
        return (await self._call("pipelines", {}, fresh, after))["pipelines"]

    async def get(self, work_id: str, *, fresh: bool = False, after: int | None = None) -> Work:
        """One work as the projection has it (NotFoundError if unknown)."""
        answer = await self._call("get", {"id": work_id}, fresh, after)
        return msgspec.convert(answer["work"], type=Work)

    async def history(self, work_id: str, *, fresh: bool = False, after: int | None = None) -> list[Recorded]:
        """Every event of one work, in order, with stream sequences."""
        from workflow.client import Recorded

        answer = await self._call("history", {"id": work_id}, fresh, after)
        return [Recorded(e["seq"], e["subject"], ev.decode(msgspec.json.encode(e["event"]))) for e in answer["events"]]

    async def position(self) -> int:
        """The last stream sequence the projection holds."""
        return (await self._call("position", {}))["seq"]

    async def wait_for(self, seq: int, timeout: float = 10.0) -> None:
        """Return once the projection holds every event up to ``seq`` (WorkflowError if not
        within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while await self.position() < seq:
            if time.monotonic() > deadline:
                raise WorkflowError(f"the projection did not reach sequence {seq} within {timeout:g}s")
            await asyncio.sleep(0.05)

    async def export(self, directory: str | Path) -> list[str]:
        """Write the tables as Parquet into ``directory`` on the projector's host."""
        return (await self._call("export", {"directory": str(Path(directory).resolve())}))["files"]


