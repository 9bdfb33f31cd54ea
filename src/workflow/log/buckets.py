"""Buckets: durable JetStream pull consumers, one per (pipeline, site, priority).

A bucket is a consumer filtered on ``wf.<pipeline>.*.queued.<site>.<priority>``; its
AckWait is the *lease*: a delivered work not heartbeated within it is delivered again.
Buckets never overlap (their filters are disjoint), so a queue message has one owner.

Fetching is done with ``no_wait`` requests: a withdraw asks the buckets in priority
order and learns at once whether each holds work, without lingering pull requests that
could capture a message for a client that has already moved on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

import nats.aio.client
from nats.aio.msg import Msg

from workflow.core.errors import WorkflowError
from workflow.core.subjects import STREAM, BucketKey, bucket_from_filter
from workflow.log import jsapi

PRIORITIES = (5, 4, 3, 2, 1)


@dataclass(frozen=True)
class BucketStats:
    """What a bucket holds now, from its consumer's state on the server."""

    pipeline: str
    site: str
    priority: int
    waiting: int       # queue messages not yet delivered (works waiting for a worker)
    held: int          # delivered and not yet acknowledged (running, or waiting for a retry)
    redelivered: int   # of those, delivered more than once (retries, lost workers)
    lease_seconds: float


class Buckets:
    """Creates, finds and fetches from bucket consumers over one NATS connection."""

    DISCOVERY_TTL = 2.0

    def __init__(self, nc: nats.aio.client.Client, lease_seconds: float) -> None:
        self._nc = nc
        self._lease = lease_seconds
        self._ack_wait: dict[BucketKey, float] = {}
        self._discovered: list[BucketKey] = []
        self._discovered_at = float("-inf")

    async def ensure(self, key: BucketKey) -> float:
        """Make sure the bucket's consumer exists; returns its AckWait (the lease) in s."""
        if key in self._ack_wait:
            return self._ack_wait[key]
        info = await jsapi.request(self._nc, f"CONSUMER.INFO.{STREAM}.{key.consumer}")
        if "error" in info:
            config = {
                "durable_name": key.consumer,
                "filter_subject": key.filter_subject,
                "ack_policy": "explicit",
                "ack_wait": int(self._lease * 1e9),
                "deliver_policy": "all",
                "max_deliver": -1,
                "max_ack_pending": -1,
                "replay_policy": "instant",
                "description": f"bucket of {key.pipeline} at {key.site}, priority {key.priority}",
            }
            info = await jsapi.request(
                self._nc, f"CONSUMER.CREATE.{STREAM}.{key.consumer}", {"stream_name": STREAM, "config": config}
            )
            if "error" in info:
                raise WorkflowError(
                    f"cannot create bucket {key.consumer}: {info['error'].get('description')}"
                )
        ack_wait = float(info["config"]["ack_wait"]) / 1e9
        self._ack_wait[key] = ack_wait
        if key not in self._discovered:  # so a withdraw without a site sees it at once
            self._discovered = [*self._discovered, key]
        return ack_wait

    async def ensure_all(self, keys: Iterable[BucketKey]) -> None:
        for key in set(keys):
            await self.ensure(key)

    async def discover(self, fresh: bool = False) -> list[BucketKey]:
        """Every bucket that exists on the server (cached for a couple of seconds)."""
        if not fresh and time.monotonic() - self._discovered_at < self.DISCOVERY_TTL:
            return self._discovered
        found: list[BucketKey] = []
        offset = 0
        while True:
            page = await jsapi.request(self._nc, f"CONSUMER.LIST.{STREAM}", {"offset": offset})
            if "error" in page:
                raise WorkflowError(f"cannot list buckets: {page['error'].get('description')}")
            consumers = page.get("consumers") or []
            for info in consumers:
                key = bucket_from_filter(info["config"].get("filter_subject", ""))
                if key is not None:
                    found.append(key)
                    self._ack_wait[key] = info["config"]["ack_wait"] / 1e9
            offset += len(consumers)
            if not consumers or offset >= page.get("total", 0):
                break
        self._discovered, self._discovered_at = found, time.monotonic()
        return found

    async def stats(self) -> list[BucketStats]:
        """Every bucket with its counts, highest priority first."""
        stats = []
        for key in await self.discover(fresh=True):
            info = await jsapi.request(self._nc, f"CONSUMER.INFO.{STREAM}.{key.consumer}")
            if "error" in info:
                continue  # deleted meanwhile
            stats.append(BucketStats(
                key.pipeline, key.site, key.priority, waiting=info.get("num_pending", 0),
                held=info.get("num_ack_pending", 0), redelivered=info.get("num_redelivered", 0),
                lease_seconds=info["config"]["ack_wait"] / 1e9,
            ))
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

    async def next_message(self, key: BucketKey) -> Msg | None:
        """The bucket's next message, or None at once if it has none ready."""
        # A pulled message arrives with its own subject, not the inbox's, so it cannot use
        # the shared request mux: each pull gets a one-message inbox of its own.
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, max_msgs=1)
        try:
            await self._nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{key.consumer}", b'{"batch":1,"no_wait":true}', reply=inbox
            )
            reply = await sub.next_msg(timeout=5)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        headers = reply.headers or {}
        status = headers.get("Status")
        if status is None:
            return reply
        if status in ("404", "408", "409"):
            # 404 no messages; 408 request expired; 409 consumer deleted or limits reached
            if status == "409" and "deleted" in headers.get("Description", "").lower():
                self._ack_wait.pop(key, None)
            return None
        raise WorkflowError(f"bucket {key.consumer} answered status {status}: {headers}")
