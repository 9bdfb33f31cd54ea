"""Filtered withdraws: take only the works that carry a tag, name an event, belong to a
user or a parent (``workflow run PIPELINE --tag T``, ``Work.withdraw(..., tags=[T])``).

Buckets are subjects, and tags are lists inside the work, so no consumer can filter on
them (DESIGN.md, "Withdraw filters"). So a filtered withdraw never pulls from a bucket:

1. **Candidates** come from the read model (a :data:`CandidateFinder`, injected: the log
   layer knows nothing of the results service; ``workflow.api`` implements it): works
   ``queued`` in these pipelines that match, highest priority first, then oldest.
2. **The claim** reads each candidate's head from the log and asks the pure
   :func:`~workflow.core.claim.decide_filtered` whether it may start it (it must still be
   waiting in its bucket, and match as the log has it). Then it puts the claim's
   heartbeat key (:mod:`workflow.log.claimer_keys`) and appends ``Started(via="filter")``
   naming the queue message, with the CAS against the head: a bucket worker, another
   filtered worker or a cancel that got there first wins, and this claim moves on.
3. **The lease** is the heartbeat key, renewed by the client's one heartbeat (it is the
   lease's :class:`~workflow.log.leases.Holding`); outcomes are recorded exactly as for
   a bucket claim, with the CAS on every event, and end the key instead of acking.

The queue message stays in its bucket, and is its work's watchdog: when a bucket worker
meets it, a live claim sends it away for the claim's remaining timeout; a dead one is
recorded lost and the work runs again (:mod:`workflow.core.claim`). So unmatched works stay
in their buckets, in order, untouched, and an unfiltered worker meets a filter-claimed
message at most once per watch interval: no churn that slows it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import msgspec
import nats.aio.client

from workflow.core import events as ev
from workflow.core.claim import FilteredStart, Head, NotClaimable, ReadQueued, decide_filtered
from workflow.core.errors import ConflictError, WorkflowError
from workflow.core.filters import WithdrawFilter
from workflow.core.subjects import STREAM, BucketKey
from workflow.core.work import Work, validate_field
from workflow.log.buckets import Buckets
from workflow.log.claimer_keys import Beat, HeartbeatTicket
from workflow.log.claims import Claims, first_within
from workflow.log.gateway import LogGateway
from workflow.log.leases import Lease, Leases
from workflow.log.watch import Watch

__all__ = ["Candidate", "CandidateFinder", "CandidateQuery", "FilteredClaims", "event_at"]

log = logging.getLogger("workflow.client")

#: How long a candidate that could not be claimed is left out of the next fetches (s): the
#: read model may still show it queued for a moment after someone started it.
SKIP_FOR = 2.0
#: At most this many candidates are skipped-over ones per query (a query asks for more).
MAX_SKIPPED = 200


@dataclass(frozen=True)
class CandidateQuery:
    """What a filtered withdraw asks the read model: up to ``limit`` works queued in these
    pipelines (at ``site`` and ``priority`` if given) matching ``filters``, highest
    priority first, then oldest, leaving out ``exclude``."""

    pipelines: list[str]
    filters: WithdrawFilter
    limit: int
    site: str | None = None
    priority: int | None = None
    exclude: frozenset[str] = frozenset()


class Found(msgspec.Struct, frozen=True):
    """A work the read model says is queued and matches: where it waits."""

    work_id: str
    pipeline: str
    site: str
    priority: int


#: Finds candidates (the read model's answer); see ``workflow.api`` for the implementation.
CandidateFinder = Callable[[CandidateQuery], Awaitable[list[Found]]]


@dataclass(frozen=True, eq=False)
class Candidate:
    """A work found for a filtered withdraw and not claimed yet (nothing is held for it)."""

    found: Found
    ack_wait: float  # the claim's lease, if it is claimed
    fetched_at: float = field(default_factory=time.monotonic)

    @property
    def priority(self) -> int:
        return self.found.priority

    @property
    def label(self) -> str:
        return f"filter:{self.found.work_id}"


class FilteredClaims:
    """Withdraws by filter: candidates from the read model, each claimed with the CAS and
    held under a heartbeat key. The same three steps as :class:`~workflow.log.claims.Claims`
    (``fetch``, ``claim``, ``give_back``), so a worker uses either."""

    def __init__(
        self, gateway: LogGateway, buckets: Buckets, leases: Leases, claims: Claims, watch: Watch,
        finder: CandidateFinder, filters: WithdrawFilter,
    ) -> None:
        self._log = gateway
        self._buckets = buckets
        self._leases = leases
        self._claims = claims  # for the heartbeat keys it shares with the bucket claims
        self._watch = watch
        self._find = finder
        self.filters = filters
        self._skipped: dict[str, float] = {}  # work id -> until when (monotonic) it is left out

    async def withdraw(
        self, pipeline: str | Sequence[str], *, site: str | None = None, priority: int | None = None,
        timeout: float = 0.0, poll: float = 0.5,
    ) -> Work | None:
        """The next matching work, now ``running`` under a lease held here, or None
        (waiting up to ``timeout`` s for one)."""
        return await first_within(lambda: self.withdraw_many(pipeline, 1, site=site, priority=priority), timeout, poll)

    async def withdraw_many(
        self, pipeline: str | Sequence[str], limit: int, *, site: str | None = None, priority: int | None = None
    ) -> list[Work]:
        """Up to ``limit`` matching works, each ``running`` under its own lease."""
        works: list[Work] = []
        while len(works) < limit:
            wanted = limit - len(works)
            batch = await self.fetch(pipeline, wanted, site=site, priority=priority)
            started = await asyncio.gather(*(self.claim(candidate) for candidate in batch))
            works.extend(work for work in started if work is not None)
            if len(batch) < wanted or not any(started):
                break
        return works

    async def fetch(
        self, pipeline: str | Sequence[str], limit: int, *, site: str | None = None, priority: int | None = None
    ) -> list[Candidate]:
        """Up to ``limit`` candidates, highest priority then oldest first, none claimed yet."""
        pipelines = [pipeline] if isinstance(pipeline, str) else list(pipeline)
        for name in pipelines:
            validate_field("pipeline", name)
        if site is not None:
            validate_field("site", site)
        if priority is not None:
            validate_field("priority", priority)
        await self._watch.pipelines(pipelines)
        now = time.monotonic()
        self._skipped = {work_id: until for work_id, until in self._skipped.items() if until > now}
        exclude = frozenset(sorted(self._skipped, key=self._skipped.__getitem__)[-MAX_SKIPPED:])
        found = await self._find(CandidateQuery(pipelines, self.filters, limit, site, priority, exclude))
        candidates = []
        for item in found:
            if item.work_id in self._skipped or self._leases.get(item.work_id) is not None:
                continue
            key = BucketKey(item.pipeline, item.site, item.priority)
            candidates.append(Candidate(item, self._buckets.ack_wait(key)))
        return candidates[:limit]

    async def give_back(self, candidate: Candidate) -> None:
        """Nothing is held for a candidate: giving it back is forgetting it."""

    async def claim(self, candidate: Candidate) -> Work | None:
        """Claim one candidate: ``Started(via="filter")`` with the CAS against its head, if
        :func:`~workflow.core.claim.decide_filtered` allows; None otherwise."""
        found = candidate.found
        record = await self._log.head(found.work_id, found.pipeline)
        head = None if record is None else Head(record.seq, record.event)
        decision = decide_filtered(head, self.filters, time.time())
        if isinstance(decision, ReadQueued):
            queued = await self._read(decision.queue_seq)
            decision = decide_filtered(head, self.filters, time.time(), queued)
        if isinstance(decision, NotClaimable):
            self._skip(found.work_id, decision)
            return None
        if not isinstance(decision, FilteredStart):
            return None
        work = await self._start(decision, candidate.ack_wait)
        if work is None:
            self._skip(found.work_id, NotClaimable("claimed by another worker first"))
        return work

    def _skip(self, work_id: str, why: NotClaimable) -> None:
        until = time.monotonic() + SKIP_FOR
        if why.due_at is not None:  # a retry's backoff: leave it out until it is due
            until = time.monotonic() + max(why.due_at - time.time(), 0.0)
        self._skipped[work_id] = until

    async def _start(self, start: FilteredStart, lease: float) -> Work | None:
        """Put the heartbeat key, then append ``Started`` with the CAS; hold the work."""
        queued = start.queued
        envelope = self._log.envelope(queued.work_id, queued.pipeline)
        started = ev.Started(
            **envelope, attempt=start.attempt, queue_seq=start.queue_seq,
            host=self._log.name.rsplit(":", 1)[0], via="filter",
        )
        beat = Beat(by=self._log.name, attempt=start.attempt)
        heartbeats = self._claims.heartbeats
        await heartbeats.put(queued.work_id, beat, lease)  # alive before the claim is in the log
        try:
            head_seq = await self._log.append(started, start.expected_seq)
        except ConflictError:
            await heartbeats.end(queued.work_id)
            return None
        running = msgspec.structs.replace(
            queued.work, id=queued.work_id, status="running", attempt=started.attempt, start=started.time, stop=None
        )
        work = copy.copy(running)  # the caller's to change; the lease keeps its own
        self._leases.add(Lease(
            work_id=queued.work_id, work=work, running=running,
            msg=HeartbeatTicket(heartbeats, queued.work_id, beat, lease),
            bucket=BucketKey(queued.pipeline, queued.work.site, queued.work.priority),
            queue_seq=start.queue_seq, head_seq=head_seq, base_attempt=queued.work.attempt, ack_wait=lease,
        ))
        return work

    async def _read(self, seq: int) -> Head | None:
        return await event_at(self._log.nc, seq)


async def event_at(nc: nats.aio.client.Client, seq: int) -> Head | None:
    """The event at stream sequence ``seq`` (a queue event a retry's chain names)."""
    reply = await nc.request(f"$JS.API.DIRECT.GET.{STREAM}", json.dumps({"seq": seq}).encode(), timeout=5)
    headers = reply.headers or {}
    if headers.get("Status") == "404":
        return None
    if headers.get("Status") is not None:
        raise WorkflowError(f"direct get of sequence {seq} failed: {headers.get('Status')}")
    return Head(int(headers["Nats-Sequence"]), ev.decode(reply.data))
