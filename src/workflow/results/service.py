"""The results service, in the projector's process; its client is ``workflow.results.client``.

DuckDB has one writer: the projector. Everyone else asks over NATS request/reply: a
``nats.micro`` service named ``workflow-results`` with endpoints under
``workflow.results.`` (``query``, ``count``, ``pipelines``, ``buckets``, ``get``, ``history``,
``throughput``, ``position``, ``export``) in the queue group ``workflow-results``, so more projector
processes (each with its own database) serve more readers. Requests are JSON
parameters (:mod:`workflow.results.queries`), never SQL.

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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from nats.micro import add_service
from nats.micro.request import Request, ServiceError

from workflow.core.errors import NotFoundError, ValidationError
from workflow.core.settings import lease_seconds
from workflow.log import jsapi
from workflow.log.client import Client
from workflow.results import audit, database, export, queries
from workflow.results.metrics import timed
from workflow.results.projector import Projector
from workflow.results.queries import QUEUE_GROUP, SERVICE, SUBJECT, VERSION

log = logging.getLogger("workflow.results")

#: An endpoint's work: the request's data in, the answer's out.
Handler = Callable[[bytes], Awaitable[bytes]]


class ResultsService:
    """Answers questions from the projector's DuckDB connection (one cursor per request)."""

    def __init__(self, nc: Any, con: Any, projector: Projector, *, concurrency: int = 4) -> None:
        self.nc = nc
        self.con = con
        self.projector = projector
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._service: Any = None
        self._exports = export.Exports()  # snapshots being downloaded; removed at stop

    async def start(self) -> None:
        self._service = await add_service(
            self.nc, name=SERVICE, version=VERSION, queue_group=QUEUE_GROUP,
            description="Queries over the workflow projection (DuckDB): works, counts, histories.",
        )
        group = self._service.add_group(name=SUBJECT, queue_group=QUEUE_GROUP)
        for name, handler in {
            "query": self._query, "count": self._count, "pipelines": self._pipelines, "buckets": self._buckets,
            "get": self._get,
            "history": self._history, "throughput": self._throughput, "position": self._position,
            "export": self._export, "audit": self._audit,
        }.items():
            await group.add_endpoint(name=name, handler=self._concurrent(timed(name, handler)))

    async def stop(self) -> None:
        if self._service is not None:
            with contextlib.suppress(Exception):
                await self._service.stop()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5)
        self._exports.close_all()

    def _concurrent(self, handler: Handler) -> Callable[[Request], Awaitable[None]]:
        """Serve each request in its own task: a slow query never holds up the others."""

        async def serve(request: Request) -> None:
            task = asyncio.create_task(self._answer(handler, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return serve

    async def _answer(self, handler: Handler, request: Request) -> None:
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

    async def _consistent(self, request: queries.Consistency | queries.Filters) -> int:
        """Wait for the asked position; the position the answer reflects at least."""
        if request.min_seq is not None and not await self.projector.wait_for(request.min_seq, request.wait):
            raise ServiceError(
                "504", f"the projection is at sequence {self.projector.position}, behind the asked "
                       f"{request.min_seq}, after waiting {request.wait:g}s; try again"
            )
        return self.projector.position

    def _read(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        cursor = self.con.cursor()
        try:
            rows: list[tuple[Any, ...]] = cursor.execute(sql, params).fetchall()
            return rows
        finally:
            cursor.close()

    async def _rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
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
        pipelines = {row[0]: dict(zip(names, row[1:], strict=True)) for row in rows}
        return msgspec.json.encode({"seq": seq, "pipelines": pipelines})

    async def _buckets(self, data: bytes) -> bytes:
        request = queries.parse(data, queries.Consistency)
        seq = await self._consistent(request)
        rows = await self._rows(queries.BUCKETS_SQL, [])
        return msgspec.json.encode({"seq": seq, "buckets": [list(row) for row in rows]})

    async def _get(self, data: bytes) -> bytes:
        request = queries.parse(data, queries.ById)
        seq = await self._consistent(request)
        rows = await self._rows(queries.GET_SQL, [request.id])
        if not rows:
            raise NotFoundError(f"no work with id {request.id} (as of sequence {seq})")
        work: str = rows[0][0]
        return b'{"seq":%d,"work":' % seq + work.encode() + b"}"

    async def _history(self, data: bytes) -> bytes:
        request = queries.parse(data, queries.ById)
        seq = await self._consistent(request)
        rows = await self._rows(queries.HISTORY_SQL, [request.id])
        if not rows:
            raise NotFoundError(f"no work with id {request.id} (as of sequence {seq})")
        events = [b'{"seq":%d,"subject":%s,"event":%s}' % (s, msgspec.json.encode(subject), payload.encode())
                  for s, subject, payload in rows]
        return b'{"seq":%d,"events":[' % seq + b",".join(events) + b"]}"

    async def _throughput(self, data: bytes) -> bytes:
        request = queries.parse(data, queries.Throughput)
        seq = await self._consistent(request)
        until = request.until if request.until is not None else time.time()
        rows = await self._rows(*queries.throughput_sql(request, until))
        counts = queries.per_minute(rows, request.minutes)
        return msgspec.json.encode({"seq": seq, "until": until, "per_minute": counts})

    async def _position(self, data: bytes) -> bytes:
        return msgspec.json.encode({"seq": self.projector.position, "unfoldable": self.projector.unfoldable})

    async def _audit(self, data: bytes) -> bytes:
        """The anomalies of the log against the projection (:mod:`workflow.results.audit`),
        the first ``MAX_ANOMALIES`` of them, and how many there are."""
        request = queries.parse(data, queries.Consistency)
        seq = await self._consistent(request)
        first = await jsapi.first_sequence(self.nc)
        cursor = self.con.cursor()
        try:
            found = await asyncio.to_thread(
                audit.audit, cursor, now=time.time(), lease=lease_seconds(), first_seq=first
            )
        finally:
            cursor.close()
        return msgspec.json.encode({"seq": seq, "total": len(found), "anomalies": found[:audit.MAX_ANOMALIES]})

    async def _export(self, data: bytes) -> bytes:
        """Open an export, give a chunk of one of its files, or close it
        (:mod:`workflow.results.export`). Never a path from the network: the files are
        written on the asker's machine, by the asker."""
        request = queries.parse(data, export.ExportRequest)
        exports = self._exports
        if request.id is None:
            if request.table is not None or request.offset or request.close:
                raise ValidationError("id", "give the id of an open export (or nothing, to open one)")
            opened = await asyncio.to_thread(exports.open, self.con.cursor())
            return msgspec.json.encode(opened)
        if request.close:
            exports.close(request.id)
            return b"{}"
        if request.table is None:
            raise ValidationError("table", f"which file of the export: one of {', '.join(export.TABLES)}")
        chunk = max(self.nc.max_payload - 65536, 65536)
        return await asyncio.to_thread(exports.read, request.id, request.table, request.offset, chunk)


async def run_projector_service(
    url: str, db_path: Path, stop: asyncio.Event, **connect_options: Any
) -> None:
    """Run the projector and the results service on ``db_path`` until ``stop`` is set."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    con = await asyncio.to_thread(database.connect, db_path)
    try:
        async with Client(url, name="workflow-projector", **connect_options) as client:
            projector = Projector(con)
            log.info("projector on %s resumes after sequence %d", db_path, projector.position)
            service = ResultsService(client.nc, con, projector)
            await service.start()
            started = time.monotonic()
            try:
                await projector.run(client.nc, stop)
            finally:
                await service.stop()
            log.info(
                "projector stopped at sequence %d (%.0f s)", projector.position, time.monotonic() - started
            )
    finally:
        con.close()
