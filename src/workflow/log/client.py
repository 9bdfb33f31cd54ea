"""The async client: one connection to the log, and the parts that work through it.

The client opens the connection, checks the server, and composes the parts, each one
concern in its own module: :mod:`~workflow.log.gateway` reads and appends with per-work
CAS, :mod:`~workflow.log.deposits` puts works in buckets, :mod:`~workflow.log.claims`
withdraws and holds them under a :class:`Lease`, :mod:`~workflow.log.outcomes` records
what became of them, :mod:`~workflow.log.operations` cancels and re-queues. The methods
here only delegate, so the public face stays one object while each part stays small.

The parts exist only while connected (made in :meth:`Client.open`), so none of them has
to ask whether it is.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Self

import nats
import nats.aio.client
import nats.errors

from workflow.core import events as ev
from workflow.core import runs, session
from workflow.core.configs import Config, parse
from workflow.core.errors import PermissionDeniedError, WorkflowError
from workflow.core.filters import WithdrawFilter
from workflow.core.ids import worker_name
from workflow.core.products import ArchivedFile
from workflow.core.retry import retry_delay
from workflow.core.schedules import Definition, ScheduleAdded, ScheduleRemoved, schedule_spec
from workflow.core.settings import lease_seconds, nats_url, redacted
from workflow.core.waits import not_before
from workflow.core.work import Work
from workflow.log import configs as config_log
from workflow.log import connection, jsapi
from workflow.log import schedules as schedule_log
from workflow.log.buckets import Buckets, BucketStats
from workflow.log.bulk import Bulk
from workflow.log.claims import Claims, Lease, Leases
from workflow.log.deposits import deposit
from workflow.log.filtered import CandidateFinder, FilteredClaims
from workflow.log.gateway import LogGateway, Recorded
from workflow.log.operations import Operations
from workflow.log.outcomes import Outcomes
from workflow.log.permissions import RefusalWatch, refused_as
from workflow.log.watch import Watch

__all__ = ["Client", "Lease", "Recorded", "retry_delay"]

log = logging.getLogger("workflow.client")

#: Bytes kept free under the server's message limit for the headers of an event.
HEADER_ROOM = 1024


@dataclass(frozen=True)
class _Connected:
    """The parts of a connected client, all over one NATS connection."""

    gateway: LogGateway
    buckets: Buckets
    leases: Leases
    watch: Watch
    claims: Claims
    outcomes: Outcomes
    operations: Operations
    bulk: Bulk

    @classmethod
    def build(cls, nc: nats.aio.client.Client, max_payload: int, name: str, lease: float) -> _Connected:
        gateway = LogGateway(nc, max_payload, name)
        buckets = Buckets(nc, lease)
        leases = Leases(gateway)
        watch = Watch(gateway, buckets, leases)
        operations = Operations(gateway, buckets, leases)
        return cls(
            gateway, buckets, leases, watch,
            claims=Claims(gateway, buckets, leases, watch),
            outcomes=Outcomes(gateway, leases),
            operations=operations,
            bulk=Bulk(gateway, operations),
        )


class Client:
    """One connection to the workflow system (see :func:`workflow.connect`)."""

    def __init__(
        self, url: str | None = None, *, lease: float | None = None, candidate_finder: CandidateFinder | None = None,
        **nats_options: Any,
    ):
        """``candidate_finder``: where filtered withdraws (``withdraw(..., tags=…)``) find
        their candidates, the read model, which this layer does not know:
        ``workflow.connect()``'s client gives one; without it a filtered withdraw is refused."""
        self.url = nats_url(url)
        self._candidate_finder = candidate_finder
        self.name: str = nats_options.pop("name", None) or worker_name()
        self._options = nats_options
        self._lease_seconds = lease if lease is not None else lease_seconds()
        self._parts: _Connected | None = None
        self._refusals = RefusalWatch(self.url, self._options)
        self._token: contextvars.Token[session.Session | None] | None = None

    # -- connection -------------------------------------------------------------------

    @property
    def _connected(self) -> _Connected:
        if self._parts is None:
            raise WorkflowError("client is not connected: use `async with workflow.connect() as client:`")
        return self._parts

    @property
    def refusal(self) -> PermissionDeniedError | None:
        """The last operation the NATS server refused this client, if any (see
        :mod:`workflow.log.permissions`): why a pull it may not make brought nothing."""
        return self._refusals.last_refusal

    @property
    def is_open(self) -> bool:
        return self._parts is not None and self._parts.gateway.nc.is_connected

    @property
    def nc(self) -> nats.aio.client.Client:
        return self._connected.gateway.nc

    async def open(self) -> Self:
        """Connect, check the server and the log, and build the parts."""
        nc = await self._connect()
        try:
            jsapi.check_server_version(nc, redacted(self.url))
            info = await jsapi.stream_info(nc)
        except WorkflowError:
            await nc.close()
            raise
        stream_limit = info["config"].get("max_msg_size", -1)
        limit = min(nc.max_payload, stream_limit) if stream_limit > 0 else nc.max_payload
        self._parts = _Connected.build(nc, limit - HEADER_ROOM, self.name, self._lease_seconds)
        self._refusals.requests = self._parts.gateway.requests  # a refused append fails at once
        self._refusals.on_refusal(self._parts.buckets.refused)  # and a refused pull
        return self

    async def _connect(self) -> nats.aio.client.Client:
        async def on_error(error: Exception) -> None:
            log.debug("nats: %s", error)

        nc = await connection.open_connection(
            self.url, refusals=self._refusals, on_error=on_error, name=self.name, allow_reconnect=True,
            **self._options,
        )
        return nc

    async def close(self, *, release: bool = True) -> None:
        """Give back every work still held (so it runs again soon), then disconnect."""
        parts = self._parts
        if parts is None:
            return
        if release:
            for lease in parts.leases.all():
                with contextlib.suppress(Exception):
                    await parts.outcomes.release(lease.work)
        for lease in parts.leases.all():
            parts.leases.drop(lease)
        await parts.leases.close()
        with contextlib.suppress(Exception):
            await parts.gateway.nc.drain()
        self._parts = None

    async def __aenter__(self) -> Self:
        await self.open()
        self._token = session.bind(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._token is not None:
            session.unbind(self._token)
            self._token = None
        await self.close()

    # -- the log (gateway) ------------------------------------------------------------

    async def head(self, work_id: str, pipeline: str | None = None) -> Recorded | None:
        """The last event of a work (its current head), or None if it does not exist."""
        return await self._connected.gateway.head(work_id, pipeline)

    async def history_records(self, work_id: str, pipeline: str | None = None) -> list[Recorded]:
        """Every event of a work, in order, with sequences."""
        return await self._connected.gateway.history_records(work_id, pipeline)

    async def history(self, work_id: str) -> list[ev.AnyEvent]:
        """Every event of a work, in order: how it got where it is."""
        return await self._connected.gateway.history(work_id)

    async def get(self, work_id: str) -> Work:
        """The current state of a work, folded from its events in the log."""
        return await self._connected.gateway.get(work_id)

    async def append(self, event: ev.AnyEvent, expected_seq: int) -> int:
        """Append ``event`` if the work's last event is still ``expected_seq``; its sequence."""
        return await self._connected.gateway.append(event, expected_seq)

    async def append_durably(self, event: ev.AnyEvent, expected_seq: int, *, patience: float = 3600.0) -> int:
        """``append``, retried through NATS outages for up to ``patience`` seconds."""
        return await self._connected.gateway.append_durably(event, expected_seq, patience=patience)

    # -- deposit, withdraw, leases ----------------------------------------------------

    async def deposit(
        self,
        works: Work | dict[str, Any] | Iterable[Work | dict[str, Any]],
        *,
        delay: float | str | timedelta | None = None,
        at: float | str | datetime | None = None,
    ) -> list[str]:
        """Put works in their buckets; returns their ids (re-depositing one is a no-op).

        A work may be a ``Work`` or its payload (a dict): a field the Work does not have,
        or a site this host does not know (``WORKFLOW_SITES``), is a ValidationError, and
        nothing of the call is deposited.

        A work with ``precursors`` (work ids) waits until every one of them succeeded;
        ``delay`` (seconds, a timedelta, ``"30s"``/``"5m"``/``"2h"``) or ``at`` (unix
        seconds, a datetime, ISO-8601 text) hold every work of the call back until then.
        """
        parts = self._connected
        due = not_before(delay, at, time.time())
        with refused_as("deposit"):
            return await deposit(parts.gateway, parts.buckets, works, not_before=due)

    async def withdraw(
        self,
        pipeline: str | Sequence[str],
        *,
        site: str | None = None,
        priority: int | None = None,
        timeout: float = 0.0,
        poll: float = 0.5,
        tags: str | Sequence[str] | None = None,
        event: int | Sequence[int] | None = None,
        user: str | None = None,
        parent: str | None = None,
    ) -> Work | None:
        """The next work of these pipelines, now ``running`` under a lease held here.

        ``tags`` (any of them), ``event`` (any of them), ``user`` and ``parent`` (the
        work's ``config["parent"]``) take only matching works (see
        :mod:`workflow.log.filtered`; it needs the results service)."""
        filters = WithdrawFilter.of(tags, event, user, parent)
        with refused_as("withdraw"):
            if filters:
                return await self.filtered(filters).withdraw(
                    pipeline, site=site, priority=priority, timeout=timeout, poll=poll
                )
            return await self._connected.claims.withdraw(
                pipeline, site=site, priority=priority, timeout=timeout, poll=poll)

    def filtered(self, filters: WithdrawFilter) -> FilteredClaims:
        """Claiming by filter, in the same steps as :attr:`claims` (see :mod:`workflow.log.filtered`)."""
        finder = self._candidate_finder
        if finder is None:
            raise WorkflowError(
                "a filtered withdraw finds works through the results service: use the client of "
                "`workflow.connect()`, not the log layer's own"
            )
        parts = self._connected
        return FilteredClaims(parts.gateway, parts.buckets, parts.leases, parts.claims, parts.watch, finder, filters)

    async def withdraw_many(
        self, pipeline: str | Sequence[str], limit: int, *, site: str | None = None, priority: int | None = None
    ) -> list[Work]:
        """Up to ``limit`` works at once, each ``running`` under its own lease, highest
        priority first (a lower priority only once the higher buckets are empty); an empty
        list at once if there is none. What a worker with ``limit`` free slots asks."""
        with refused_as("withdraw"):
            return await self._connected.claims.withdraw_many(pipeline, limit, site=site, priority=priority)

    @property
    def watch(self) -> Watch:
        """The cancels and deposits of the pipelines this client withdraws from (see
        :mod:`workflow.log.watch`): ``watch.on_queued(listener)`` wakes a sleeping worker."""
        return self._connected.watch

    @property
    def claims(self) -> Claims:
        """Claiming in its two steps (fetch deliveries, start each), for a worker that
        overlaps them (see :mod:`workflow.log.claims`)."""
        return self._connected.claims

    def lease(self, work: Work | str) -> Lease | None:
        """The lease this client holds on a work, if any (none once closed)."""
        if self._parts is None:
            return None
        return self._parts.leases.get(work if isinstance(work, str) else work.id)

    # -- outcomes ---------------------------------------------------------------------

    async def succeed(
        self,
        work: Work,
        results: dict[str, Any] | None = None,
        products: list[str] | None = None,
        plots: list[str] | None = None,
        *,
        archived: list[ArchivedFile] | None = None,
        patience: float = 3600.0,
    ) -> None:
        """Record that a held work succeeded, then ack its queue message (``archived``: the
        products and plots archived for this attempt, :mod:`workflow.core.products`)."""
        with refused_as("recording success"):
            await self._connected.outcomes.succeed(
                work, results, products, plots, archived=archived, patience=patience
            )

    async def fail(
        self,
        work: Work,
        reason: ev.FailureReason,
        error: str | None = None,
        traceback: str | None = None,
        *,
        retry: bool = True,
        results: dict[str, Any] | None = None,
        products: list[str] | None = None,
        plots: list[str] | None = None,
        archived: list[ArchivedFile] | None = None,
        patience: float = 3600.0,
    ) -> ev.Failed:
        """Record a failed attempt; retried later (``nak`` with backoff) if attempts remain."""
        with refused_as("recording a failure"):
            return await self._connected.outcomes.fail(
                work, reason, error, traceback, retry=retry, results=results, products=products, plots=plots,
                archived=archived, patience=patience,
            )

    async def release(self, work: Work, reason: str = "worker stopped at once") -> ev.Failed:
        """Give a held work back now (interrupted attempt; it is retried at once if it may)."""
        return await self._connected.outcomes.release(work, reason)

    async def update(self, work: Work) -> None:
        """Record the outcome set on a withdrawn work: ``status`` success or failure."""
        await self._connected.outcomes.update(work)

    # -- operator actions -------------------------------------------------------------

    async def buckets(self) -> list[BucketStats]:
        """Every bucket with its consumer's counts: messages not yet delivered, and those
        held by workers (``workflow.Client`` adds the read model's ``waiting``: what can run)."""
        return await self._connected.operations.buckets()

    async def cancel(self, work_id: str, reason: str | None = None) -> ev.Cancelled:
        """Cancel a work: a queued work never runs; a running one is stopped as soon as its
        worker hears the ``Cancelled`` event."""
        with refused_as("cancel"):
            return await self._connected.operations.cancel(work_id, reason)

    async def requeue(
        self, work_id: str, *, priority: int | None = None, site: str | None = None, reason: str | None = None
    ) -> Work:
        """Put a queued or finished work (back) in a bucket, at a new priority or site if given."""
        with refused_as("requeue"):
            return await self._connected.operations.requeue(work_id, priority=priority, site=site, reason=reason)

    async def delete(
        self, work_id: str, reason: str | None = None, *, products_removed: list[str] | None = None,
    ) -> ev.Deleted:
        """Delete a work: hidden from lists and counts from now on, its history kept for
        audits (the log is immutable: a delete is a ``Deleted`` event). A work not yet
        finished is cancelled first. ConflictError if already deleted. ``products_removed``
        records archived files removed with it (``workflow.Client.delete(products=True)``)."""
        with refused_as("delete"):
            return await self._connected.operations.delete(work_id, reason, products_removed)

    # -- schedules (:mod:`workflow.log.schedules`) -------------------------------------

    async def add_schedule(
        self, name: str, work: Work, *, every: str | None = None, cron: str | None = None,
        timezone: str | None = None,
    ) -> ScheduleAdded:
        """Deposit a copy of ``work`` at each firing: ``every="10m"`` or a 6-field
        ``cron="0 0 2 * * *"`` (or ``"@daily"``…), read in UTC or in ``timezone`` (an IANA
        name, ``"America/Vancouver"``). Recorded in the log; ``workflow server`` fires it.
        ConflictError if a schedule of that name is in force."""
        with refused_as("adding a schedule"):
            return await schedule_log.add(self._connected.gateway, name, work, schedule_spec(every, cron),
                                          timezone=timezone)

    async def remove_schedule(self, name: str, reason: str | None = None) -> ScheduleRemoved:
        """Stop a schedule (recorded in the log). NotFoundError if none of that name is in force."""
        with refused_as("removing a schedule"):
            return await schedule_log.remove(self._connected.gateway, name, reason)

    async def schedules(self) -> list[Definition]:
        """The schedules in force, by name, read from the log."""
        return await schedule_log.current(self._connected.gateway.nc)

    # -- configurations (:mod:`workflow.log.configs`) -----------------------------------

    async def deploy_config(self, config: Config | str, *, file: str | None = None) -> config_log.Deployment:
        """Deploy a pipeline configuration (a parsed :class:`Config`, or the YAML text) and
        start a run of it. A file with problems is a ConfigError listing each one
        (``file:line:column``), and nothing is written."""
        if isinstance(config, str):
            config = parse(config, file or "<config>")
        parts = self._connected
        return await config_log.deploy(parts.gateway, parts.buckets, config, file)

    async def configs(self) -> list[runs.History]:
        """The configurations deployed now, each with its history (deployments, runs)."""
        return await config_log.listing(self._connected.gateway.nc)

    async def config_run(self, name: str, run: str | None = None) -> config_log.RunState:
        """A run of a configuration (its latest without ``run``): each step's works and statuses."""
        return await config_log.run_state(self._connected.gateway, name, run)

    async def stop_run(self, name: str, run: str, reason: str | None = None) -> tuple[runs.RunStopped, list[str]]:
        """Stop a run: recorded, then every work of it not finished is cancelled (their ids returned)."""
        parts = self._connected
        return await config_log.stop(parts.gateway, parts.operations, name, run, reason)

    async def retry_run(self, name: str, run: str) -> runs.RunRetried:
        """Run again what failed or was cancelled in a finished run, and what followed it."""
        parts = self._connected
        return await config_log.retry(parts.gateway, parts.buckets, name, run)

    async def start_scheduled_run(self, name: str, run: str) -> str:
        """A firing of a scheduled configuration (what ``workflow server``'s scheduler calls):
        start run ``run`` once, or not at all if removed or expired (see
        :func:`workflow.log.configs.start_scheduled_run`)."""
        parts = self._connected
        return await config_log.start_scheduled_run(parts.gateway, parts.buckets, name, run)

    async def remove_config(self, name: str, reason: str | None = None) -> runs.ConfigRemoved:
        """Remove a configuration (its runs under way go on). NotFoundError if none is deployed."""
        return await config_log.remove(self._connected.gateway, name, reason)

    @property
    def bulk(self) -> Bulk:
        """Cancel, re-queue or delete many works, each with its own CAS'd event (see
        :mod:`workflow.log.bulk`; ``cancel_many`` and friends of ``workflow.connect()``'s
        client select them by filter)."""
        return self._connected.bulk
