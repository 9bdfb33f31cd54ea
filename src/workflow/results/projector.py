"""The projector: folds the WORKFLOW stream, in order, into DuckDB.

It reads the log with an ordered consumer (ephemeral, in-memory, no acks, flow
controlled; nats-py recreates it at the right sequence after any gap or reconnect)
starting at ``checkpoint + 1``. Messages are gathered in batches; each batch is decoded,
folded (``workflow.results.projection``) and written with its checkpoint in one DuckDB
transaction (``workflow.results.database``) on a worker thread, while the next batch arrives.
A SIGKILL at any moment leaves the database at a batch boundary, and the restarted
projector goes on from exactly there. Events at or below the checkpoint are ignored, so
a redelivery can never be applied twice. A message it cannot or must not fold (hostile,
corrupt, from a newer version, not allowed by the work's state machine) never stops it:
it goes to the ``rejected`` table, in its batch's transaction.

The same class replays a log into a fresh file (``workflow replay``), optionally only
up to a moment (``until``: the server's time at which each event was logged), which
gives the state of every work as it was then.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.aio.client
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from workflow.core.display import when
from workflow.core.errors import WorkflowError
from workflow.core.runs import is_config_subject
from workflow.core.schedules import is_schedule_subject
from workflow.core.subjects import PREFIX, STREAM
from workflow.log import jsapi
from workflow.log.gateway import UNAVAILABLE
from workflow.results import database, projection
from workflow.results.projection import Batch, Decoded, Refused, Row

log = logging.getLogger("workflow.projector")

#: A message of the log: ``(stream sequence, server time, subject, data)``.
Message = tuple[int, float, str, bytes]

#: Events per transaction at most (``WORKFLOW_PROJECTOR_BATCH``). Larger batches write
#: faster: fewer calls into DuckDB, and more of a work's events fold into one row (fewer
#: rows deleted and inserted again); replaying 1.4 M events, 100,000 is ~25% faster than
#: 20,000 and the peak memory is the same (DuckDB's). A live system's batches are small
#: anyway (what arrived during the last write).
BATCH_SIZE = int(os.environ.get("WORKFLOW_PROJECTOR_BATCH") or 100_000)
#: Work rows kept in memory so that the events following a deposit need no lookup.
CACHE_SIZE = 200_000
#: What a subscription meets while the server cannot answer yet: asked again, not fatal.
_NOT_YET: tuple[type[Exception], ...] = (*UNAVAILABLE, nats.js.errors.ServiceUnavailableError)
#: Allocations between two young-generation collections of the cyclic GC while projecting.
GC_THRESHOLD = 50_000
#: How long a live batch waits, from its first message, for more to join it: at least
#: ``linger`` (``run``'s argument, 20 ms), else ``LINGER_PER_WRITE`` times the last
#: write's duration up to ``MAX_LINGER``. A write has a fixed cost whatever its size
#: (~15 ms of DuckDB CPU: planning, scanning the batch's Arrow tables, the commit; more
#: in Python), so on an idle system batches are small and quick, and under load they grow
#: with the writes instead of spending a core on commits: at ~1,000 works/s, lingering
#: 20 ms made ~17 transactions a second and cost the projector 0.54 ms of CPU per work;
#: ~100 ms made it 0.34 ms. A reader waiting for a position (``wait_for``: ``fresh=True``
#: or ``after=SEQ``) cuts the wait short, so read-your-writes never pays for it.
LINGER_PER_WRITE = 2.0
MAX_LINGER = 0.25


def sequence_and_time(reply: str) -> tuple[int, float]:
    """Stream sequence and server time (unix s) from a JetStream message's reply subject."""
    tokens = reply.split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[7]) / 1e9
    # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>[.<token>]
    return int(tokens[7]), int(tokens[9]) / 1e9


class Projector:
    """Folds the log into a projection database; tracks how far it got."""

    def __init__(
        self,
        con: Any,
        *,
        stream: str = STREAM,
        batch_size: int = BATCH_SIZE,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.store = database.ProjectionStore(con, stream)
        self.stream = stream
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.position = self.store.checkpoint()  # in the tables (committed)
        self.folded = self.position  # in memory, being written
        #: Messages rejected since this projector started (the ``rejected`` table has all).
        self.unfoldable = 0
        self._cache: dict[str, Row] = {}
        self._other: list[tuple[int, float, str, bytes]] = []  # decoded, not folded yet (see fold)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._hurry: asyncio.Event | None = None  # set by a new waiter: stop lingering
        self._feed: _Subscription | None = None  # the subscription reading now (a waiter wakes it)
        self.last_write = 0.0  # seconds the last batch's write took
        self.lingering = False  # a batch is gathering (see LINGER_PER_WRITE)

    # -- waiting for a position (read-your-writes) ----------------------------------------

    async def wait_for(self, seq: int, timeout: float) -> bool:
        """True once every event up to ``seq`` is in the tables (False after ``timeout``)."""
        if self.position >= seq:
            return True
        future = asyncio.get_running_loop().create_future()
        entry = (seq, future)
        self._waiters.append(entry)
        if self._hurry is not None:
            self._hurry.set()
        if self._feed is not None and self._feed.buffer:
            self._feed.ready.set()  # a reader waits: what is buffered is a batch now, not in a second
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
            return True
        except TimeoutError:
            return self.position >= seq
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _advanced(self) -> None:
        for seq, future in list(self._waiters):
            if seq <= self.position and not future.done():
                future.set_result(None)

    # -- one batch: decode, fold (pure, in memory), write (one transaction) ---------------

    def decode(self, messages: list[Message]) -> tuple[list[Decoded], list[Refused], int]:
        """The new messages decoded, those refused (with why), and the last sequence they
        cover (0: nothing new)."""
        decoded = []
        refused: list[Refused] = []
        last = 0
        read = projection.read
        for seq, logged, subject, data in messages:
            if seq <= self.folded:
                continue  # already applied (a redelivery after a consumer reset)
            last = seq
            if is_schedule_subject(subject) or is_config_subject(subject):  # a schedule's or a configuration's
                # event (core.schedules, core.runs), not a work's:
                self._other.append((seq, logged, subject, data))  # kept in `other`, not folded
                continue
            try:
                event = read(subject, data)
            except Exception as error:  # ValidationError; anything else too: never block the projection
                refused.append((seq, logged, subject, str(error), data))
                continue
            decoded.append((seq, logged, subject, data, event))
        return decoded, refused, last

    def missing(self, decoded: list[Decoded]) -> list[str]:
        """Works the batch changes whose current row is not in memory (to load first).

        Deposits too: a deposit of a work that exists (a raw publish, without the CAS that
        makes deposits unique) must meet its row to be refused. New ids cost little to
        look up: they are time-sorted, so DuckDB skips every row group by its min/max id.
        """
        cache = self._cache
        return list({e.work_id for *_, e in decoded if e.work_id not in cache})

    def fold(
        self, decoded: list[Decoded], last: int, known: dict[str, Row], refused: list[Refused] | None = None
    ) -> Batch | None:
        """Fold decoded events onto the rows in memory (or ``known``, loaded from the
        database); ``refused`` messages (from ``decode``) join the batch's rejected ones."""
        if not last:
            return None
        cache = self._cache
        batch = Batch(rejected=list(refused or ()), other=self._other)
        self._other = []  # decode and fold of one batch always run in turn: this batch's
        batch.fold(decoded, lambda work_id: cache.get(work_id) or known.get(work_id))
        batch.last_seq = last  # also past refused messages at the end
        self.folded = last
        if batch.rejected:
            self.unfoldable += len(batch.rejected)
            first = min(batch.rejected)
            log.warning(
                "%d message(s) rejected, not folded (see the rejected table; `workflow audit`): "
                "first seq %d on %s: %s", len(batch.rejected), first[0], first[2], first[3],
            )
        for work_id, row in batch.rows.items():  # most recently changed last: evicted last
            cache.pop(work_id, None)
            cache[work_id] = row
        if len(cache) > self.cache_size:
            for work_id in list(cache)[: len(cache) - self.cache_size // 2]:
                del cache[work_id]
        return batch

    def _decode_missing(self, messages: list[Message]) -> tuple[list[Decoded], list[Refused], int, list[str]]:
        """``decode``, and the works whose rows must be loaded (off the event loop's thread)."""
        decoded, refused, last = self.decode(messages)
        return decoded, refused, last, self.missing(decoded)

    def _fold_tables(
        self, decoded: list[Decoded], last: int, known: dict[str, Row], refused: list[Refused]
    ) -> Batch | None:
        """``fold``, and the batch's Arrow tables built (on this thread, not the writer's)."""
        batch = self.fold(decoded, last, known, refused)
        if batch is not None:
            batch.tables()
        return batch

    def write(self, batch: Batch) -> None:
        """Write a folded batch and its checkpoint in one transaction."""
        self.store.write(batch)
        self.position = batch.last_seq

    def apply(self, messages: list[Message]) -> int:
        """Decode, fold and write ``(seq, logged, subject, data)`` messages; events written."""
        decoded, refused, last = self.decode(messages)
        missing = self.missing(decoded)
        batch = self.fold(decoded, last, self.store.load_rows(missing) if missing else {}, refused)
        if batch is None:
            return 0
        self.write(batch)
        return len(batch)

    # -- the consumer ----------------------------------------------------------------------

    async def run(
        self,
        nc: nats.aio.client.Client,
        stop: asyncio.Event | None = None,
        *,
        until_seq: int | None = None,
        until_time: float | None = None,
        progress: Callable[[int], None] | None = None,
        linger: float = 0.02,
    ) -> int:
        """Project until ``stop`` is set, or (replay) up to ``until_seq`` / ``until_time``.

        Returns the position reached. ``progress`` is called with it after each batch.
        """
        limits = _Limits(stop or asyncio.Event(), until_seq, until_time, progress, linger)
        self._hurry = asyncio.Event()
        # Each event allocates a few objects and few live long: with the default gen-0
        # threshold (700) the cyclic collector runs every ~200 events, traversing the
        # young rows each time, which costs more than a microsecond per event.
        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], GC_THRESHOLD), *thresholds[1:])
        try:
            return await self._run(nc, limits)
        finally:
            gc.set_threshold(*thresholds)

    async def _run(self, nc: nats.aio.client.Client, limits: _Limits) -> int:
        last = await jsapi.last_sequence(nc, self.stream)
        if last < self.position:
            raise WorkflowError(
                f"the projection is at sequence {self.position} but the {self.stream} log ends at {last}: "
                "this database was built from another log; replay into a new file"
            )
        while not limits.stop.is_set():
            if limits.until_seq is not None and self.position >= limits.until_seq:
                break
            complete = await self._consume(nc, limits)
            if complete:
                break
        return self.position

    async def _consume(self, nc: nats.aio.client.Client, limits: _Limits) -> bool:
        """One subscription from ``position + 1``; False if it must be restarted (a gap)."""
        feed = _Subscription(nc, self.stream, self.position, self.batch_size, limits)
        feed.readers_waiting = lambda: bool(self._waiters)
        self._feed = feed
        subscription = await self._subscribe(feed, limits)
        stopper = asyncio.create_task(limits.stop.wait())
        writer = _Writer(self, limits.progress)
        try:
            return await self._pipeline(feed, writer, stopper, limits)
        finally:
            stopper.cancel()
            feed.close()  # releases a callback waiting for room
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            await writer.wait()

    async def _subscribe(self, feed: _Subscription, limits: _Limits) -> Any:
        """``feed.subscribe()``, asked again while the server cannot answer (just reconnected
        to a cluster still electing the stream's leader: a timeout or a 503), until stopped."""
        delay = 0.5
        while True:
            try:
                return await feed.subscribe()
            except _NOT_YET as error:
                if limits.stop.is_set():
                    raise
                log.warning("cannot read the log yet (%r); asking again in %.1f s", error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(limits.stop.wait(), delay)
                delay = min(delay * 2, 10.0)

    async def _pipeline(
        self, feed: _Subscription, writer: _Writer, stopper: asyncio.Task[Any], limits: _Limits
    ) -> bool:
        """Batches from ``feed``, each decoded and folded while the previous one is written;
        True once done (stopped, or ``until`` reached), False on a gap in delivery."""
        until_seq = limits.until_seq
        while True:
            if not feed.buffer:
                if feed.broken.is_set():
                    log.warning("a message went missing in delivery; resuming the log after sequence %d",
                                self.position)
                    return False
                if feed.reconnected():  # the server may have lost the consumer: start afresh now
                    log.info("reconnected to NATS; resuming the log after sequence %d", self.position)
                    return False
                if feed.finished.is_set() or limits.stop.is_set():
                    return True
                await feed.wait_ready(stopper)
                continue
            if feed.gathering() and limits.linger:
                await self._linger(limits.linger, stopper)  # let a burst gather into one transaction
            messages = feed.take()
            if until_seq is not None:
                messages = [m for m in messages if m[0] <= until_seq]
            batch = await self._prepare(messages, writer.pending)
            if batch is not None:
                await writer.submit(batch)
            if until_seq is not None and self.folded >= until_seq:
                return True

    async def _linger(self, least: float, stopper: asyncio.Task[Any]) -> None:
        """Wait for a batch to gather (see ``LINGER_PER_WRITE``), unless a reader waits
        (or until ``stopper`` is done)."""
        if self._hurry is None or self._waiters or stopper.done():
            return
        self._hurry.clear()
        hurried = asyncio.create_task(self._hurry.wait())
        seconds = max(least, min(MAX_LINGER, LINGER_PER_WRITE * self.last_write))
        self.lingering = True
        try:
            await asyncio.wait([hurried, stopper], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.lingering = False
            hurried.cancel()

    async def _prepare(self, messages: list[Message], pending: dict[str, Row]) -> Batch | None:
        """Decode and fold a batch (and build its tables), off the event loop's thread."""
        decoded, refused, last, missing = await asyncio.to_thread(self._decode_missing, messages)
        known: dict[str, Row] = {}
        if missing:
            # Rows of the previous batch (maybe being written, not committed yet) come from
            # memory; any other from the committed tables, read through a second
            # connection while that write goes on.
            known = {work_id: pending[work_id] for work_id in missing if work_id in pending}
            wanted = [work_id for work_id in missing if work_id not in pending]
            if wanted:
                known.update(await asyncio.to_thread(self.store.load_rows, wanted, committed=True))
        return await asyncio.to_thread(self._fold_tables, decoded, last, known, refused)


@dataclass(frozen=True)
class _Limits:
    """What a ``Projector.run`` was asked for: when to stop, and how to report."""

    stop: asyncio.Event
    until_seq: int | None
    until_time: float | None
    progress: Callable[[int], None] | None
    linger: float


class _Subscription:
    """One ordered consumer from ``start + 1``, gathering messages into ``buffer``.

    ``ready``: a batch is there (or the end); ``finished``: ``until`` reached, nothing more
    will be buffered; ``broken``: a message went missing in delivery (restart from the
    checkpoint). The callback waits while ``high_water`` messages wait to be taken.
    """

    def __init__(
        self, nc: nats.aio.client.Client, stream: str, start: int, batch_size: int, limits: _Limits
    ) -> None:
        self.nc = nc
        self.stream = stream
        self.start = start
        self.batch_size = batch_size
        self.high_water = batch_size * 2
        self.until_seq = limits.until_seq
        self.until_time = limits.until_time
        self.buffer: list[Message] = []
        self.last_seen = start
        self.ready = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.finished = asyncio.Event()
        self.broken = asyncio.Event()
        self._reconnects = nc.stats["reconnects"]
        #: Whether a reader waits for the projection (``fresh``): then a message is a batch
        #: at once, instead of after ``wait_ready``'s second.
        self.readers_waiting: Callable[[], bool] = lambda: False

    def reconnected(self) -> bool:
        """Whether the connection was re-established since this subscription began.

        A restarted server has lost the ordered consumer (it lives in memory); nats-py
        notices only after two missed idle heartbeats (10 s), so the projector restarts
        its subscription at once instead (from its position: nothing read twice)."""
        return self.nc.stats["reconnects"] != self._reconnects

    async def subscribe(self) -> JetStreamContext.PushSubscription:
        # Unlimited client-side pending limits: nats-py's ordered consumer would silently
        # lose a message dropped as "slow consumer". Memory stays bounded by JetStream
        # flow control, which waits for this callback (and so for DuckDB) to keep up.
        return await self.nc.jetstream().subscribe(
            f"{PREFIX}.>",
            stream=self.stream,
            cb=self.on_message,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.start + 1),
            idle_heartbeat=5.0,
            pending_msgs_limit=0,
            pending_bytes_limit=0,
        )

    async def on_message(self, msg: Msg) -> None:
        if self.finished.is_set() or self.broken.is_set():
            return
        seq, logged = sequence_and_time(msg.reply)
        if seq <= self.last_seen:
            return  # seen already (a consumer reset delivers again)
        if seq > self.last_seen + 1 and not await self._aged_out(seq):
            self.broken.set()
            self.ready.set()
            return
        if self.until_time is not None and logged > self.until_time:
            self.finished.set()
            self.ready.set()
            return
        self.last_seen = seq
        self.buffer.append((seq, logged, msg.subject, msg.data))
        if self.until_seq is not None and seq >= self.until_seq:
            self.finished.set()
        if len(self.buffer) >= self.batch_size or self.finished.is_set() or self.readers_waiting():
            self.ready.set()
        while len(self.buffer) >= self.high_water and not self.broken.is_set():  # back-pressure until written
            self.room.clear()
            await self.room.wait()

    async def _aged_out(self, seq: int) -> bool:
        """Whether the messages before ``seq`` were removed from the log (retention): fine,
        nothing to read there. Anything else is a delivery loss: never skip it."""
        first = await jsapi.first_sequence(self.nc, self.stream)
        if first <= self.last_seen + 1:
            return False
        log.warning("events %d..%d aged out of the log before they were projected", self.last_seen + 1, first - 1)
        return True

    def gathering(self) -> bool:
        """More messages may still join the next batch."""
        return not (self.finished.is_set() or self.broken.is_set()) and len(self.buffer) < self.batch_size

    def take(self) -> list[Message]:
        """The next batch of messages, out of the buffer (making room for the callback)."""
        messages, self.buffer[:] = self.buffer[: self.batch_size], self.buffer[self.batch_size :]
        if len(self.buffer) < self.high_water:
            self.room.set()
        return messages

    async def wait_ready(self, stopper: asyncio.Task[Any]) -> None:
        """Until a batch is ready, ``stopper`` is done, or a second has passed."""
        waiter = asyncio.create_task(self.ready.wait())
        await asyncio.wait([waiter, stopper], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        self.ready.clear()

    def close(self) -> None:
        """No more messages: a callback waiting for room returns."""
        self.broken.set()
        self.room.set()


class _Writer:
    """Writes folded batches in the background, one at a time, in order."""

    def __init__(self, projector: Projector, progress: Callable[[int], None] | None) -> None:
        self.projector = projector
        self.progress = progress
        self.task: asyncio.Task[None] | None = None
        #: The rows of the last batch submitted (maybe being written, not committed yet).
        self.pending: dict[str, Row] = {}

    async def submit(self, batch: Batch) -> None:
        """Start writing ``batch`` once the previous write is done."""
        await self.wait()
        self.pending = batch.rows
        self.task = asyncio.create_task(self._write(batch))

    async def wait(self) -> None:
        """Until the last batch submitted is written."""
        if self.task is not None:
            await self.task

    async def _write(self, batch: Batch) -> None:
        began = time.perf_counter()
        await asyncio.to_thread(self.projector.write, batch)
        self.projector.last_write = time.perf_counter() - began
        self.projector._advanced()
        if self.progress is not None:
            self.progress(self.projector.position)


async def check_replay(nc: nats.aio.client.Client, db_path: Path, until_time: float | None = None) -> None:
    """Refuse, before any file is written, a replay that cannot give what it promises: into
    a file that exists, or up to a time before the log's first event when older events
    have aged out of it (the state at that moment is no longer in the log). On a whole log
    (from sequence 1), a time before its first event is a fair question: nothing existed
    yet, and the replay says so with an empty database."""
    if db_path.exists():
        raise WorkflowError(f"{db_path} exists; replay builds a fresh database (remove it, or choose another file)")
    if until_time is None or await jsapi.first_sequence(nc) <= 1:
        return
    first = await jsapi.first_time(nc)
    if first is not None and until_time < first:
        raise WorkflowError(
            f"cannot replay up to {when(until_time)}: the log's events before {when(first)} have aged out of it "
            "(UTC unless the time names its zone). No file was written."
        )


async def replay(
    nc: nats.aio.client.Client,
    db_path: Path,
    *,
    until_time: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Build a fresh projection in ``db_path`` from the whole log (up to ``until_time``).

    Returns the last sequence applied. ``progress(position, last)`` follows it.
    """
    await check_replay(nc, db_path, until_time)
    last = await jsapi.last_sequence(nc)
    con = database.connect(db_path)
    try:
        projector = Projector(con, batch_size=batch_size)
        if last == 0:
            return 0
        return await projector.run(
            nc,
            until_seq=last,
            until_time=until_time,
            progress=(lambda position: progress(position, last)) if progress else None,
        )
    finally:
        con.close()
