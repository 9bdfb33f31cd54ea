"""Buckets: durable JetStream pull consumers, one per (pipeline, site, priority).

A bucket is a consumer filtered on ``wf.<pipeline>.*.queued.<site>.<priority>``; its
AckWait is the *lease*: a delivered work not heartbeated within it is delivered again.
Buckets never overlap (their filters are disjoint), so a queue message has one owner.

Fetching is done with ``no_wait`` requests for a batch: a withdraw asks the buckets in
priority order for as many messages as it can run and learns at once what each holds,
without lingering pull requests that could capture a message for a client that has
already moved on.

Asking the buckets in priority order costs a round trip per bucket asked, and most are
empty most of the time: a withdraw of priority-3 work used to ask priorities 5 and 4 first,
every time. So a bucket whose pull came back short is remembered as *drained* and skipped
until something is queued in it (the client hears every queue event of its pipelines, see
:mod:`workflow.log.claims`: :meth:`Buckets.refilled`) or :data:`DRAINED_FOR` passes (a
message comes back without a queue event when it is redelivered: a retry's backoff ends,
a worker gave it back or died). Priority order holds for what is queued: a deposit of
priority-5 work makes its bucket the first asked again. The queue event can outrun the
message into the bucket (it is heard as the stream stores it), so a pull that comes back
short within :data:`DRAINED_FOR` of a queue event does not mark the bucket drained.

A missing bucket is asked of the server (:mod:`workflow.followers.bucket_keeper`): only the
server role may create consumers, since creating one is also rewriting it. Where no server
answers (a bare nats-server, the tests of this layer), the client creates the bucket
itself, which a server with ``workflow secure init``'s roles refuses to every other role.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nats.aio.client
import nats.errors
from nats.aio.msg import Msg

from workflow.core.errors import PermissionDeniedError, WorkflowError
from workflow.core.subjects import BUCKET_REQUESTS, STREAM, BucketKey, bucket_from_filter
from workflow.core.work import PRIORITIES
from workflow.log import jsapi
from workflow.log.inbox import Inbox

#: How long a bucket that came back short is skipped unless a queue event names it (s).
DRAINED_FOR = 0.25


def bucket_config(key: BucketKey, lease_seconds: float) -> dict[str, Any]:
    """The consumer configuration of a bucket: AckWait is the lease."""
    return {
        "durable_name": key.consumer,
        "filter_subject": key.filter_subject,
        "ack_policy": "explicit",
        "ack_wait": int(lease_seconds * 1e9),
        "deliver_policy": "all",
        "max_deliver": -1,
        "max_ack_pending": -1,
        "replay_policy": "instant",
        "description": f"bucket of {key.pipeline} at {key.site}, priority {key.priority}",
    }


async def create_bucket(nc: nats.aio.client.Client, key: BucketKey, lease_seconds: float) -> dict[str, Any]:
    """Create the bucket's consumer, never changing an existing one (``action: create``:
    the server refuses it for a consumer that exists, whose info is then answered as it is).
    The consumer's info, or a JetStream ``error``."""
    created = await jsapi.request(nc, f"CONSUMER.CREATE.{STREAM}.{key.consumer}", {
        "stream_name": STREAM, "config": bucket_config(key, lease_seconds), "action": "create"})
    if created.get("error", {}).get("err_code") == jsapi.CONSUMER_EXISTS:
        return await jsapi.request(nc, f"CONSUMER.INFO.{STREAM}.{key.consumer}")
    return created


@dataclass(frozen=True)
class BucketStats:
    """What a bucket holds now: its consumer's state on the server, and (``waiting``) the
    read model's count of the works queued in it.

    The two differ: a work cancelled, deleted or moved (re-queued elsewhere) while queued
    leaves its queue message in the bucket, ``undelivered`` until a worker meets it and
    drops it, so only ``waiting`` says what can run. The log alone cannot tell those
    messages apart without reading each one; the read model folds every work and can.
    """

    pipeline: str
    site: str
    priority: int
    undelivered: int   # queue messages not yet delivered, of works that can run or no longer can
    held: int          # delivered and not yet acknowledged (running, or waiting for a retry)
    redelivered: int   # of those, delivered more than once (retries, lost workers)
    lease_seconds: float
    #: Works queued in the bucket (the read model's ``queued``): what can run, a retry once
    #: its delay is over. None when the read model was not asked or did not answer.
    waiting: int | None = None


class Buckets:
    """Creates, finds and fetches from bucket consumers over one NATS connection."""

    DISCOVERY_TTL = 2.0

    def __init__(self, nc: nats.aio.client.Client, lease_seconds: float) -> None:
        self._nc = nc
        self._lease = lease_seconds
        self._ack_wait: dict[BucketKey, float] = {}
        self._discovered: list[BucketKey] = []
        self._discovered_at = float("-inf")
        self._by_consumer: dict[str, BucketKey] = {}
        self._inbox = nc.new_inbox()
        self._pulled: Inbox | None = None  # the long-lived inbox all pulls answer on
        self._pull_lock = asyncio.Lock()
        self._pulls = 0
        self._drained: dict[BucketKey, float] = {}  # when a pull last came back short
        self._queued_at: dict[BucketKey, float] = {}  # when a queue event last named the bucket

    async def ensure(self, key: BucketKey) -> float:
        """Make sure the bucket's consumer exists; returns its AckWait (the lease) in s."""
        if key in self._ack_wait:
            return self._ack_wait[key]
        info = await jsapi.request(self._nc, f"CONSUMER.INFO.{STREAM}.{key.consumer}")
        if "error" in info:
            info = await self._ask_for(key)
            if "error" in info:
                raise WorkflowError(f"cannot create bucket {key.consumer}: {info['error'].get('description')}")
        ack_wait = float(info["config"]["ack_wait"]) / 1e9
        self._ack_wait[key] = ack_wait
        self._by_consumer[key.consumer] = key
        if key not in self._discovered:  # so a withdraw without a site sees it at once
            self._discovered = [*self._discovered, key]
        return ack_wait

    async def _ask_for(self, key: BucketKey) -> dict[str, Any]:
        """Ask the server's bucket keeper to create the bucket (with this client's lease);
        create it here if no keeper answers."""
        request = {"pipeline": key.pipeline, "site": key.site, "priority": key.priority, "lease": self._lease}
        try:
            reply = await self._nc.request(BUCKET_REQUESTS, json.dumps(request).encode(), timeout=5)
        except nats.errors.NoRespondersError:
            try:
                return await create_bucket(self._nc, key, self._lease)
            except PermissionDeniedError as error:
                raise PermissionDeniedError(
                    f"{error} (no `workflow server` answered on {BUCKET_REQUESTS} to create bucket {key.consumer}, "
                    "and only the server role may create one)") from None
        answer: dict[str, Any] = json.loads(reply.data)
        return answer

    async def ensure_all(self, keys: Iterable[BucketKey]) -> None:
        for key in set(keys):
            await self.ensure(key)

    async def discover(self, fresh: bool = False) -> list[BucketKey]:
        """Every bucket that exists on the server (cached for a couple of seconds)."""
        if not fresh and time.monotonic() - self._discovered_at < self.DISCOVERY_TTL:
            return self._discovered
        await self._listed()
        return self._discovered

    async def _listed(self) -> list[tuple[BucketKey, dict[str, Any]]]:
        """Every bucket with its consumer's info, from ``CONSUMER.LIST`` (a page per 256
        consumers), remembered as the discovered buckets."""
        found: list[tuple[BucketKey, dict[str, Any]]] = []
        offset = 0
        while True:
            page = await jsapi.request(self._nc, f"CONSUMER.LIST.{STREAM}", {"offset": offset})
            if "error" in page:
                raise WorkflowError(f"cannot list buckets: {page['error'].get('description')}")
            consumers = page.get("consumers") or []
            for info in consumers:
                key = bucket_from_filter(info["config"].get("filter_subject", ""))
                if key is not None:
                    found.append((key, info))
                    self._ack_wait[key] = info["config"]["ack_wait"] / 1e9
                    self._by_consumer[key.consumer] = key
            offset += len(consumers)
            if not consumers or offset >= page.get("total", 0):
                break
        self._discovered, self._discovered_at = [key for key, _ in found], time.monotonic()
        return found

    async def stats(self) -> list[BucketStats]:
        """Every bucket with its counts, highest priority first.

        The counts come with the consumer listing itself (one request per 256 buckets),
        not from a ``CONSUMER.INFO`` per bucket: a dashboard of 200 buckets used to wait
        for 200 round trips (about 95 ms on a quiet machine; 14 ms this way). Either way
        the counts are the server's at the moment it answers, and ``held`` trails an
        outcome by the ack's flight: acks are not awaited (:mod:`workflow.log.outcomes`),
        so a work just recorded as succeeded may still count as held for a moment.
        """
        stats = [
            BucketStats(
                key.pipeline, key.site, key.priority, undelivered=info.get("num_pending", 0),
                held=info.get("num_ack_pending", 0), redelivered=info.get("num_redelivered", 0),
                lease_seconds=info["config"]["ack_wait"] / 1e9,
            )
            for key, info in await self._listed()
        ]
        return sorted(stats, key=lambda s: (s.pipeline, -s.priority, s.site))

    async def select(
        self, pipelines: list[str], site: str | None, priority: int | None
    ) -> list[BucketKey]:
        """The buckets a withdraw asks, highest priority first."""
        priorities = (priority,) if priority is not None else PRIORITIES
        if site is not None:
            keys = [BucketKey(p, site, prio) for prio in priorities for p in pipelines]
            await self.ensure_all(keys)
            return keys
        wanted = set(pipelines)
        keys = [k for k in await self.discover() if k.pipeline in wanted and k.priority in priorities]
        return sorted(keys, key=lambda k: -k.priority)

    def ack_wait(self, key: BucketKey) -> float:
        return self._ack_wait.get(key, self._lease)

    def key_of(self, consumer: str) -> BucketKey | None:
        """The bucket a consumer name belongs to, if this client knows it."""
        return self._by_consumer.get(consumer)

    def drained(self, key: BucketKey) -> bool:
        """True if the bucket came back short a moment ago and nothing was queued in it since."""
        since = self._drained.get(key)
        return since is not None and time.monotonic() - since < DRAINED_FOR

    def refilled(self, key: BucketKey) -> None:
        """Something was queued (or given back) in this bucket: ask it again."""
        self._drained.pop(key, None)
        self._queued_at[key] = time.monotonic()

    async def next_message(self, key: BucketKey) -> Msg | None:
        """The bucket's next message, or None at once if it has none ready."""
        messages = await self.fetch(key, 1)
        return messages[0] if messages else None

    async def fetch(self, key: BucketKey, batch: int) -> list[Msg]:
        """Up to ``batch`` of the bucket's messages that are ready now (fewer, or none, at
        once if it holds fewer): one ``no_wait`` pull request.

        Pulls go out one at a time, on one long-lived inbox subscription per client: a
        pulled message arrives with its own subject, not the inbox's, so it is routed by
        subscription, and the end of a pull (a status message, unless the batch was full)
        is the only message that names the pull's own reply subject.
        """
        async with self._pull_lock:
            inbox = await self._pull_inbox()
            self._pulls += 1
            reply = f"{self._inbox}.{self._pulls}"
            request = b'{"batch":%d,"no_wait":true}' % batch
            await self._nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{key.consumer}", request, reply=reply)
            messages: list[Msg] = []
            while len(messages) < batch:
                msg = await inbox.next(timeout=5)
                if not msg.subject.startswith(self._inbox):
                    messages.append(msg)  # a pulled message (a late one of an earlier pull is ours too)
                elif msg.subject == reply and self._ended(key, msg):
                    break
            now = time.monotonic()
            if len(messages) < batch and now - self._queued_at.get(key, -DRAINED_FOR) >= DRAINED_FOR:
                self._drained[key] = now  # short, and not just after a queue event that may outrun its message
            return messages

    def refused(self, subject: str, error: Exception) -> None:
        """The server refused a publish: if it was a pull, the pull waiting for its answer
        ends with ``error`` at once (none would come)."""
        if subject.startswith(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.") and self._pulled is not None \
                and self._pull_lock.locked():
            self._pulled.fail(error)

    async def _pull_inbox(self) -> Inbox:
        if self._pulled is None:
            self._pulled = await Inbox.open(self._nc, f"{self._inbox}.*")
        return self._pulled

    def _ended(self, key: BucketKey, msg: Msg) -> bool:
        """True if this status message ends the pull; raises on an unexpected status."""
        headers = msg.headers or {}
        status = headers.get("Status")
        if status in ("404", "408", "409"):
            # 404 no messages; 408 request expired; 409 consumer deleted or limits reached
            if status == "409" and "deleted" in headers.get("Description", "").lower():
                self._ack_wait.pop(key, None)
            return True
        if status == "100":
            return False  # an idle heartbeat: the pull goes on
        raise WorkflowError(f"bucket {key.consumer} answered status {status}: {headers}")
