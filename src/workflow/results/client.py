"""``Results``: queries to the results service, from any process that reaches NATS.

Requests are JSON parameters (:mod:`workflow.results.queries`), never SQL. See
:mod:`workflow.results.service` for what the answers promise about consistency
(``fresh=True``, ``after=SEQ``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack, cast

import msgspec
import nats.errors

from workflow.core import events as ev
from workflow.core.errors import WorkflowError
from workflow.core.filters import FilterValues, Moment, WorkFilter, as_unix, many
from workflow.core.subjects import BucketKey
from workflow.core.work import Work
from workflow.log import jsapi
from workflow.log.client import Recorded
from workflow.results import export
from workflow.results.queries import SUBJECT, raise_for_error

if TYPE_CHECKING:
    from workflow.log.client import Client


class Results:
    """Queries answered by the results service; ``client.results`` of an open client.

    Every method takes ``fresh=True`` (see everything in the log up to now, including
    your own writes) or ``after=SEQ`` (see at least up to that stream sequence).
    """

    def __init__(self, client: Client, timeout: float = 10.0) -> None:
        self._client = client
        self.timeout = timeout

    async def _call(
        self, endpoint: str, body: dict[str, Any], fresh: bool = False, after: int | None = None
    ) -> dict[str, Any]:
        if fresh:
            after = max(after or 0, await jsapi.last_sequence(self._client.nc))
        if after is not None:
            body["min_seq"] = after
        payload = msgspec.json.encode({k: v for k, v in body.items() if v is not None})
        try:
            reply = await self._client.nc.request(f"{SUBJECT}.{endpoint}", payload, timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise WorkflowError(
                "no results service answers (it runs in `workflow server` or `workflow projector --db FILE`)"
            ) from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise WorkflowError(f"the results service did not answer {endpoint} within {self.timeout:g}s") from None
        raise_for_error(reply.headers)
        return msgspec.json.decode(reply.data, type=dict[str, Any])

    async def query(
        self,
        where: WorkFilter | None = None,
        /,
        *,
        limit: int = 100,
        offset: int = 0,
        order: str = "-creation",
        fields: list[str] | None = None,
        fresh: bool = False,
        after: int | None = None,
        **filters: Unpack[FilterValues],
    ) -> list[Work] | list[dict[str, Any]]:
        """Works matching every filter, newest first by default (``order="creation"``:
        oldest first; any of ``queries.ORDERABLE``, ``-`` for descending).

        The filters are keywords (``pipeline="p", status=["queued", "running"]``) or one
        :class:`~workflow.core.filters.WorkFilter`; see it for each (one value or several;
        ``tags``: works with all of them; ``since``/``until``: creation time;
        ``id_prefix``; ``after_id``: works whose id sorts after it, with ``order="id"``
        pages that never shift while works change; ``parent``: works whose
        ``config["parent"]`` is it, e.g. a configuration run's id; ``precursor``: works
        whose ``precursors`` name this work id, those waiting on it or run after it). A bad value is a
        ValidationError with its Work field's message. Deleted works are left out unless
        ``include_deleted`` (or ``status`` names them).

        Returns Works, or plain dicts of just ``fields`` when given.
        """
        body = WorkFilter.either(where, filters).given()
        body.update(limit=limit, offset=offset, order=order, fields=fields)
        works: list[dict[str, Any]] = (await self._call("query", body, fresh, after))["works"]
        if fields is not None:
            return works
        return [msgspec.convert(work, type=Work) for work in works]

    async def count(
        self,
        where: WorkFilter | None = None,
        /,
        *,
        fresh: bool = False,
        after: int | None = None,
        **filters: Unpack[FilterValues],
    ) -> int:
        """How many works match every filter (same filters as ``query``; deleted works
        are not counted unless ``include_deleted``)."""
        body = WorkFilter.either(where, filters).given()
        return cast(int, (await self._call("count", body, fresh, after))["count"])

    async def pipelines(self, *, fresh: bool = False, after: int | None = None) -> dict[str, dict[str, int]]:
        """Per pipeline: the total, and the number of works in each status of ``status.LOGGED``
        (deleted works are in neither)."""
        return cast(dict[str, dict[str, int]], (await self._call("pipelines", {}, fresh, after))["pipelines"])

    async def queued(self, *, fresh: bool = False, after: int | None = None) -> dict[BucketKey, int]:
        """Per bucket: the works queued in it, the ones that can run (``status`` queued; a
        retry once its delay is over). Buckets with none are left out."""
        answer = await self._call("buckets", {}, fresh, after)
        return {BucketKey(pipeline, site, priority): count for pipeline, site, priority, count in answer["buckets"]}

    async def get(self, work_id: str, *, fresh: bool = False, after: int | None = None) -> Work:
        """One work as the projection has it (NotFoundError if unknown)."""
        answer = await self._call("get", {"id": work_id}, fresh, after)
        return msgspec.convert(answer["work"], type=Work)

    async def history(self, work_id: str, *, fresh: bool = False, after: int | None = None) -> list[Recorded]:
        """Every event of one work, in order, with stream sequences."""
        answer = await self._call("history", {"id": work_id}, fresh, after)
        return [Recorded(e["seq"], e["subject"], ev.decode(msgspec.json.encode(e["event"]))) for e in answer["events"]]

    async def throughput(
        self, minutes: int = 60, pipeline: str | list[str] | None = None, until: Moment | None = None,
        *, fresh: bool = False, after: int | None = None,
    ) -> list[int]:
        """How many works finished in each of the last ``minutes`` minutes (before ``until``,
        default now), oldest first: the dashboard's sparkline."""
        body = {"minutes": minutes, "pipeline": many(pipeline) or None, "until": as_unix(until, "until")}
        return cast(list[int], (await self._call("throughput", body, fresh, after))["per_minute"])

    async def position(self) -> int:
        """The last stream sequence the projection holds."""
        return cast(int, (await self._call("position", {}))["seq"])

    async def wait_for(self, seq: int, timeout: float = 10.0) -> None:
        """Return once the projection holds every event up to ``seq`` (WorkflowError if not
        within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while await self.position() < seq:
            if time.monotonic() > deadline:
                raise WorkflowError(f"the projection did not reach sequence {seq} within {timeout:g}s")
            await asyncio.sleep(0.05)

    async def export(self, directory: str | Path) -> list[str]:
        """Write the tables as Parquet into ``directory`` on this machine (new files only):
        the service streams a snapshot; no path ever travels to the server."""
        _, files = await export.download(self._client.nc, Path(directory))
        return [str(path) for path in files]

    async def audit(self, *, fresh: bool = True) -> dict[str, Any]:
        """The log checked against the projection: ``{"seq", "total", "anomalies"}``
        (see :mod:`workflow.results.audit`); ``total == 0`` when clean."""
        return await self._call("audit", {}, fresh)

    async def queued_matching(self, where: WorkFilter, *, limit: int, fresh: bool = True) -> list[dict[str, Any]]:
        """A filtered withdraw's candidates (``where``: its
        :meth:`~workflow.core.filters.WithdrawFilter.queued` question), highest priority
        first, then oldest; each as ``{id, pipeline, site, priority}``."""
        body = {**where.given(), "limit": limit, "order": "queue", "fields": ["id", "pipeline", "site", "priority"]}
        return cast(list[dict[str, Any]], (await self._call("query", body, fresh))["works"])
