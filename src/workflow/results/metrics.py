"""What ``workflow server --metrics-port N`` tells Prometheus at ``/metrics``.

Three sources, each the authority for what it reports:

- **The log**, read by this module's own ordered consumer from the first retained event
  and then live: ``workflow_works_total{pipeline, event, reason}``, one count per event
  (``deposited``, ``requeued``, ``started``, ``succeeded``, ``failed`` with its
  ``reason``, ``cancelled``). Recounted from the log at every start, so after a restart
  the counters are the log's totals again and agree with the read model (which folds
  the same log); only events aged out of the stream are no longer counted.
- **The buckets' consumers**, asked at scrape time: ``workflow_bucket_undelivered``,
  ``workflow_bucket_held`` and ``workflow_bucket_redelivered`` per pipeline, site and
  priority. Undelivered counts messages, not works that can run: a work cancelled,
  deleted or moved while queued leaves its message there until a worker drops it.
- **The read model**, asked at scrape time through the results service: works per
  pipeline and status (``workflow_pipeline_works``), the works queued in each bucket, the
  ones that can run (``workflow_bucket_waiting``), the projector's position and its
  lag behind the log head (``workflow_projector_lag_events``).

``workflow_metrics_source_up{source}`` says whether each scrape-time source answered.
The results service's request latency (``workflow_results_request_seconds``) is
recorded by :func:`timed` around each endpoint's handler.

Label values are bounded: pipeline names (at most :data:`MAX_PIPELINES`, the rest under
``_other``), event and reason names from fixed lists, sites and priorities. Never a work id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast, get_args

import msgspec
import nats
import nats.aio.client
from prometheus_client import (
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    gc_collector,
    platform_collector,
    process_collector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workflow.core.errors import WorkflowError
from workflow.core.events import EVENT_TYPES, FailureReason
from workflow.core.subjects import PREFIX, STREAM, BucketKey, bucket_from_filter
from workflow.log import connection
from workflow.results.client import Results

log = logging.getLogger("workflow.metrics")
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series (half the lines)

#: Distinct pipelines counted by name; past this many (a flood of bad names), ``_other``.
MAX_PIPELINES = 1000
OTHER = "_other"
EVENTS = frozenset(EVENT_TYPES)
REASONS = frozenset(get_args(FailureReason))
SCRAPE_TIMEOUT = 5.0

#: The results service's answer times, by endpoint and outcome (``ok`` or ``error``).
#: Not registered anywhere by itself: each server's registry registers it.
REQUEST_SECONDS = Histogram(
    "workflow_results_request_seconds",
    "Time the results service took to answer a request (after it got one of its slots).",
    ["endpoint", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=None,
)


def timed(endpoint: str, handler: Callable[[bytes], Awaitable[bytes]]) -> Callable[[bytes], Awaitable[bytes]]:
    """``handler``, timed into ``workflow_results_request_seconds{endpoint=…}``."""

    async def answer(data: bytes) -> bytes:
        began = time.perf_counter()
        outcome = "error"
        try:
            body = await handler(data)
            outcome = "ok"
            return body
        finally:
            REQUEST_SECONDS.labels(endpoint=endpoint, outcome=outcome).observe(time.perf_counter() - began)

    return answer


# -- counting the log -------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    """The two fields of an event the counts need (msgspec skips the rest unread)."""

    type: str = ""
    reason: str | None = None


_envelope = msgspec.json.Decoder(_Envelope)


@dataclass
class EventCounts:
    """Events per (pipeline, event, reason), folded from the log's subjects and payloads."""

    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    position: int = 0  # the last stream sequence counted
    _pipelines: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, subject: str, data: bytes, seq: int = 0) -> None:
        """Count the event published on ``subject`` with payload ``data`` (junk is ignored)."""
        tokens = subject.split(".")
        if len(tokens) not in (4, 6) or tokens[0] != PREFIX or tokens[1].startswith("_"):
            return  # (``wf._schedule.…``, ``wf._config.…``: a schedule's or a configuration's, no work's)
        event, reason = tokens[3], ""
        if event == "queued" or event == "waiting" or event == "failed":
            try:
                envelope = _envelope.decode(data)
            except msgspec.DecodeError:
                return
            if event != "failed":  # a deposit or re-queue (a waiting deposit is a deposit)
                event = envelope.type
            else:
                reason = envelope.reason if envelope.reason is not None and envelope.reason in REASONS else "other"
        if event not in EVENTS:
            return
        key = (self._pipeline(tokens[1]), event, reason)
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            self.position = max(self.position, seq)

    def _pipeline(self, name: str) -> str:
        if name in self._pipelines:
            return name
        if len(self._pipelines) >= MAX_PIPELINES:
            return OTHER
        self._pipelines.add(name)
        if len(self._pipelines) == MAX_PIPELINES:
            log.warning("%d pipelines counted; events of any further pipeline are counted under %r",
                        MAX_PIPELINES, OTHER)
        return name

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self.counts)


# -- what is asked at scrape time -------------------------------------------------------


class BucketDepth(NamedTuple):
    """What one bucket's consumer holds now."""

    pipeline: str
    site: str
    priority: int
    undelivered: int  # queue messages not yet delivered (of works that can run, or no longer can)
    held: int  # delivered, not yet acknowledged (running, or waiting for a retry)
    redelivered: int  # of those, delivered more than once


@dataclass
class Live:
    """One scrape's answers from NATS (None: that source did not answer)."""

    buckets: list[BucketDepth] | None = None
    last_seq: int | None = None
    log_messages: int | None = None
    log_bytes: int | None = None
    position: int | None = None
    pipelines: dict[str, dict[str, int]] | None = None
    queued: dict[BucketKey, int] | None = None  # works queued per bucket (the read model)


async def bucket_depths(nc: nats.aio.client.Client) -> list[BucketDepth]:
    """Every bucket's counts, from one listing of the stream's consumers (pages of 256)."""
    depths: list[BucketDepth] = []
    offset = 0
    while True:
        page = await nc.jetstream().consumers_info(STREAM, offset=offset)
        for info in page:
            key = bucket_from_filter(info.config.filter_subject or "")
            if key is not None:
                depths.append(BucketDepth(
                    key.pipeline, key.site, key.priority, undelivered=info.num_pending or 0,
                    held=info.num_ack_pending or 0, redelivered=info.num_redelivered or 0,
                ))
        offset += len(page)
        if len(page) < 256:
            return depths


@dataclass(frozen=True)
class _Connection:
    """What :class:`~workflow.results.client.Results` uses of a client: its connection."""

    nc: nats.aio.client.Client


async def ask(nc: nats.aio.client.Client) -> Live:
    """Ask the buckets, the stream and the results service, each on its own."""
    live = Live()
    results = Results(cast(Any, _Connection(nc)), timeout=SCRAPE_TIMEOUT / 2)

    async def buckets() -> None:
        live.buckets = await bucket_depths(nc)

    async def stream() -> None:
        info = await nc.jetstream().stream_info(STREAM)
        live.last_seq, live.log_messages, live.log_bytes = info.state.last_seq, info.state.messages, info.state.bytes

    async def read_model() -> None:
        live.position = await results.position()
        live.pipelines = await results.pipelines()
        live.queued = await results.queued()

    for name, source in (("buckets", buckets), ("log", stream), ("results", read_model)):
        try:
            await source()
        except Exception as error:
            log.debug("metrics: %s did not answer: %s: %s", name, type(error).__name__, error)
    return live


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def live_metrics(live: Live) -> Iterator[Metric]:
    """The gauges of one scrape's answers."""
    up = _gauge("workflow_metrics_source_up", "1 if the source answered this scrape, else 0.", ["source"])
    up.add_metric(["buckets"], float(live.buckets is not None))
    up.add_metric(["log"], float(live.last_seq is not None))
    up.add_metric(["results"], float(live.position is not None))
    yield up
    if live.buckets is not None:
        for attribute, text in (
            ("undelivered", "Queue messages not yet delivered, of works that can run and of works cancelled, "
                            "deleted or moved since they were queued (until a worker drops them)."),
            ("held", "Delivered and not yet acknowledged: running, or waiting for a retry."),
            ("redelivered", "Of the held, delivered more than once (retries, lost workers)."),
        ):
            family = _gauge(f"workflow_bucket_{attribute}", text, ["pipeline", "site", "priority"])
            for bucket in live.buckets:
                family.add_metric([bucket.pipeline, bucket.site, str(bucket.priority)], getattr(bucket, attribute))
            yield family
    if live.queued is not None:
        yield _waiting(live.buckets or [], live.queued)
    if live.last_seq is not None:
        yield GaugeMetricFamily("workflow_log_last_sequence", "Sequence of the last event in the log.",
                                value=live.last_seq)
        yield GaugeMetricFamily("workflow_log_events", "Events retained in the log.", value=live.log_messages)
        yield GaugeMetricFamily("workflow_log_bytes", "Bytes the log retains.", value=live.log_bytes)
    if live.position is not None:
        yield GaugeMetricFamily("workflow_projector_position", "Last log sequence the read model holds.",
                                value=live.position)
        if live.last_seq is not None:
            yield GaugeMetricFamily("workflow_projector_lag_events",
                                    "Events in the log the read model does not hold yet (log head - checkpoint).",
                                    value=max(live.last_seq - live.position, 0))
    if live.pipelines is not None:
        works = _gauge("workflow_pipeline_works", "Works per pipeline and status, as the read model has them.",
                       ["pipeline", "status"])
        for pipeline, counts in sorted(live.pipelines.items()):
            for status, count in counts.items():
                if status != "total":
                    works.add_metric([pipeline, status], count)
        yield works


def _waiting(buckets: list[BucketDepth], queued: dict[BucketKey, int]) -> Metric:
    """``workflow_bucket_waiting``: the works queued in each bucket (0 where none are)."""
    family = _gauge("workflow_bucket_waiting", "Works queued in the bucket, the ones that can run (a retry once its "
                    "delay is over), as the read model has them.", ["pipeline", "site", "priority"])
    keys = {BucketKey(b.pipeline, b.site, b.priority) for b in buckets} | set(queued)
    for key in sorted(keys, key=lambda k: (k.pipeline, -k.priority, k.site)):
        family.add_metric([key.pipeline, key.site, str(key.priority)], queued.get(key, 0))
    return family


class ServerCollector(Collector):
    """Yields the log's counts and, at each scrape, asks NATS for the live gauges."""

    def __init__(self, counts: EventCounts, nc: nats.aio.client.Client, loop: asyncio.AbstractEventLoop) -> None:
        self.counts = counts
        self.nc = nc
        self.loop = loop

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "workflow_works", "Events of works in the log, per pipeline and event (failed: per reason).",
            labels=["pipeline", "event", "reason"],
        )
        for (pipeline, event, reason), count in sorted(self.counts.snapshot().items()):
            family.add_metric([pipeline, event, reason], count)
        yield family
        yield GaugeMetricFamily("workflow_metrics_log_position", "Last log sequence the event counts include.",
                                value=self.counts.position)
        # Called from the HTTP thread; NATS lives on the server's event loop.
        future = asyncio.run_coroutine_threadsafe(ask(self.nc), self.loop)
        try:
            live = future.result(SCRAPE_TIMEOUT)
        except Exception as error:
            future.cancel()
            log.warning("metrics scrape could not ask NATS: %s: %s", type(error).__name__, error)
            live = Live()
        yield from live_metrics(live)


def server_registry(collector: Collector) -> CollectorRegistry:
    """A registry with the server's collector, the request histogram and the process's own."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    registry.register(REQUEST_SECONDS)
    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    return registry


async def follow_log(nc: nats.aio.client.Client, counts: EventCounts) -> Any:
    """Count every event from the first retained one, then each new one as it lands."""
    from nats.js.api import DeliverPolicy

    async def on_message(msg: Any) -> None:
        counts.add(msg.subject, msg.data, msg.metadata.sequence.stream)

    return await nc.jetstream().subscribe(
        f"{PREFIX}.>", stream=STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, cb=on_message,
    )


async def run_metrics(
    url: str, port: int, stop: asyncio.Event, *, host: str = "0.0.0.0", on_ready: Callable[[int], None] | None = None,
    **connect_options: Any,
) -> None:
    """Serve the server's ``/metrics`` on ``host:port`` (0: any free port) until ``stop`` is set.

    ``connect_options`` go to ``nats.connect`` (``user``, ``password``, ``user_credentials``, …).
    ``on_ready`` is called with the port bound once the HTTP server listens.
    """
    nc = await connection.open_connection(url, name="workflow-metrics", **connect_options)
    try:
        counts = EventCounts()
        subscription = await follow_log(nc, counts)
        registry = server_registry(ServerCollector(counts, nc, asyncio.get_running_loop()))
        try:
            server, _thread = start_http_server(port, addr=host, registry=registry)
        except OSError as error:
            raise WorkflowError(f"cannot serve metrics on {host}:{port}: {error}") from None
        bound = server.server_port
        log.info("metrics on http://%s:%d/metrics", host, bound, extra={"metrics_port": bound})
        if on_ready is not None:
            on_ready(bound)
        try:
            await stop.wait()
        finally:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
    finally:
        await nc.close()
