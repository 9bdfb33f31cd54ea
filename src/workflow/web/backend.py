"""The web UI's one connection to workflow: reads through ``client.results`` (the same
results service the CLI and the TUI ask; ``fresh``, so a page shows every event logged
before it was asked for, one's own actions included), and one acting client per web user, named
``web:<user>``, so every event an action writes says who asked for it (``by``).

No HTTP here: the pages and the JSON API ask this object, and it asks workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec

import workflow
from workflow.core.bulk import BulkReport
from workflow.core.filters import WorkFilter
from workflow.core.search import Search
from workflow.core.work import Work
from workflow.log import jsapi
from workflow.log.gateway import Recorded
from workflow.results.queries import MAX_LIMIT

#: The most works one bulk action selects (the confirmation page says so when there are more).
BULK_LIMIT = 100_000
#: The works waiting on a work that its page lists (a link to the search shows them all).
FOLLOWERS_SHOWN = 50


class Backend:
    """An open reading client and, on demand, one acting client per web user."""

    def __init__(self, connect_options: dict[str, Any]) -> None:
        self.connect_options = dict(connect_options)
        self.client: workflow.Client | None = None
        self._acting: dict[str, workflow.Client] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self.client = await workflow.connect(**{**self.connect_options, "name": "web"}).open()

    async def close(self) -> None:
        for client in [self.client, *self._acting.values()]:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()

    @property
    def reader(self) -> workflow.Client:
        if self.client is None:
            raise RuntimeError("the web backend is not open")
        return self.client

    async def acting(self, user: str) -> workflow.Client:
        """The client whose events carry ``by = web:<user>``."""
        async with self._lock:
            client = self._acting.get(user)
            if client is None or not client.is_open:
                client = await workflow.connect(**{**self.connect_options, "name": f"web:{user}"}).open()
                self._acting[user] = client
            return client

    # -- reading ---------------------------------------------------------------------

    async def search(self, search: Search, *, limit: int, offset: int, order: str) -> tuple[list[Work], int]:
        results = self.reader.results
        works, total = await asyncio.gather(
            results.query(**search.filters(), limit=limit, offset=offset, order=order, fresh=True),
            results.count(**search.filters(), fresh=True),
        )
        return [w for w in works if isinstance(w, Work)], total

    async def work(self, work_id: str) -> tuple[Work, list[Recorded], list[dict[str, Any]]]:
        """A work's page: the work, its history and the works waiting on it, asked at once
        and all as of one position of the log (read once, not once per question)."""
        results, now = self.reader.results, await jsapi.last_sequence(self.reader.nc)
        work, history, followers = await asyncio.gather(
            results.get(work_id, after=now), results.history(work_id, after=now), self.followers(work_id, after=now))
        return work, history, followers

    async def followers(self, work_id: str, limit: int = FOLLOWERS_SHOWN, *,
                        after: int | None = None) -> list[dict[str, Any]]:
        """The works whose precursors name ``work_id`` (waiting on it, or run after it),
        oldest first, as ``{id, pipeline, status}``; ``limit + 1`` asked, so a page knows
        there are more than it lists. As of ``after`` (a log position), else fresh."""
        rows = await self.reader.results.query(precursor=work_id, limit=limit + 1, order="creation",
                                               fields=["id", "pipeline", "status"], fresh=after is None, after=after)
        return [row for row in rows if isinstance(row, dict)]

    async def matching_ids(self, search: Search, limit: int = BULK_LIMIT) -> list[str]:
        """Every id the search finds (pages by id, so works changing meanwhile shift nothing)."""
        ids: list[str] = []
        after: str | None = None
        where = WorkFilter.of(**search.filters())
        while len(ids) < limit:
            rows = await self.reader.results.query(
                msgspec.structs.replace(where, after_id=after), limit=min(MAX_LIMIT, limit - len(ids)), order="id",
                fields=["id"], fresh=True)
            page = [str(row["id"]) for row in rows if isinstance(row, dict)]
            if not page:
                break
            ids.extend(page)
            after = page[-1]
        return ids

    async def dashboard(self, minutes: int = 60) -> dict[str, Any]:
        """The dashboard's four questions, at once, each answered now (nothing cached).

        The buckets were its slow part: one ``CONSUMER.INFO`` per bucket (200 round trips
        for 200 pipelines). They come from the consumer listing now, a request per 256
        buckets (:meth:`workflow.log.buckets.Buckets.stats`), which puts the page within its
        200 ms at 200 pipelines without a cache, so an opened page shows the moment it was
        asked, as every other page does. Open pages do not ask again: their counts come live
        from :mod:`workflow.web.live`, one question per burst of events for all of them.
        """
        results = self.reader.results
        counts, per_minute, buckets, schedules = await asyncio.gather(
            results.pipelines(fresh=True), results.throughput(minutes, fresh=True), self.reader.buckets(),
            self.reader.schedules())
        return {"pipelines": counts, "per_minute": per_minute, "buckets": buckets, "schedules": schedules}

    # -- acting ----------------------------------------------------------------------

    async def cancel(self, user: str, work_id: str, reason: str | None) -> None:
        await (await self.acting(user)).cancel(work_id, reason=reason or f"cancelled from the web by {user}")

    async def requeue(self, user: str, work_id: str, priority: int | None = None) -> Work:
        reason = f"re-prioritised from the web by {user}" if priority is not None else f"retried from the web by {user}"
        return await (await self.acting(user)).requeue(work_id, priority=priority, reason=reason)

    async def cancel_many(self, user: str, ids: list[str], reason: str | None) -> BulkReport:
        return await (await self.acting(user)).cancel_many(ids, reason=reason or f"cancelled from the web by {user}")


def plain(value: Any) -> Any:
    """A Work, an event or a dataclass as JSON-ready builtins."""
    return msgspec.to_builtins(value)
