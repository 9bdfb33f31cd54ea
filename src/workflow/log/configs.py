"""Configurations in the log: deploy, remove, and the runs' start, stop, retry and state.

Every change is an event on ``wf._config.<name>.<event>`` (:mod:`workflow.core.runs`),
appended with the CAS over ``wf._config.<name>.>`` (expected last sequence of the
configuration's subjects), so two operators acting on one configuration from a stale view
cannot both succeed. A run is started by its ``RunStarted`` and then its works are
deposited, their ids derived from the run's (:func:`workflow.core.configs.run_work_id`):
a deposit cut short is completed by depositing again, never doubled. Nothing here keeps
state: a configuration's history is read back from the log with direct gets, and a run's
works are found by planning it again from the deployed source, not by a query.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import NamedTuple

import nats.aio.client
from nats.aio.msg import Msg

from workflow.core import configs as cfg
from workflow.core import runs
from workflow.core.bulk import status_after
from workflow.core.errors import ConflictError, NotFoundError, ValidationError, WorkflowError
from workflow.core.ids import new_id
from workflow.core.subjects import STREAM
from workflow.core.work import Work, check_site
from workflow.log import jsapi
from workflow.log import schedules as schedule_log
from workflow.log.buckets import Buckets
from workflow.log.deposits import deposit
from workflow.log.gateway import LogGateway
from workflow.log.inbox import Inbox
from workflow.log.operations import Operations
from workflow.log.schedules import server_time

#: Direct gets asked for at once when reading a configuration's events.
_BATCH = 256
#: Work heads read at once for a run's state.
_HEADS = 256
#: Configurations listed at most by one ``ls``.
LIST_LIMIT = 10_000


class Logged(NamedTuple):
    """A configuration event as stored: its stream sequence and the server's time."""

    seq: int
    logged: float
    event: runs.AnyConfigEvent


@dataclass(frozen=True)
class Deployment:
    """What a deploy recorded: the deployment, and the run it started with its works."""

    deployed: runs.ConfigDeployed
    started: runs.RunStarted | None
    plan: cfg.Plan | None


@dataclass(frozen=True)
class RunState:
    """A run now: its record in the configuration's log, its places and their works' statuses."""

    history: runs.History
    run: runs.Run
    config: cfg.Config
    slots: list[runs.Slot]
    statuses: dict[str, str]

    @property
    def view(self) -> runs.RunView:
        return runs.view(self.run.started.run, self.config, self.slots, self.statuses, self.run.stopped is not None)


def _logged(reply: Msg) -> Logged | None:
    headers = reply.headers or {}
    if headers.get("Status") is not None:
        return None
    try:
        event = runs.decode(reply.data)
    except ValidationError:
        return None  # not a configuration event (a forged message): the configuration is as before
    return Logged(int(headers["Nats-Sequence"]), server_time(headers["Nats-Time-Stamp"]), event)


async def events(nc: nats.aio.client.Client, name: str) -> tuple[int, list[Logged]]:
    """Every event of a configuration, in order, and the last sequence on its subjects (the
    CAS of the next one; 0: none). Direct gets in batches, a few round trips in all."""
    subject = runs.name_filter(runs.check_name(name))
    found: list[Logged] = []
    last, seq = 0, 1
    inbox = await Inbox.open(nc, nc.new_inbox())
    try:
        while True:
            request = {"seq": seq, "next_by_subj": subject, "batch": _BATCH}
            await nc.publish(f"$JS.API.DIRECT.GET.{STREAM}", json.dumps(request).encode(), reply=inbox.subject)
            got = 0
            while True:
                reply = await inbox.next(timeout=5)
                headers = reply.headers or {}
                if headers.get("Status") is not None:
                    break  # 204: end of the batch; 404: nothing (more)
                last = seq = int(headers["Nats-Sequence"])
                seq += 1
                got += 1
                logged = _logged(reply)
                if logged is not None:
                    found.append(logged)
            if got < _BATCH or headers.get("Nats-Num-Pending") in ("0", None):
                break
    finally:
        await inbox.close()
    return last, found


async def history(nc: nats.aio.client.Client, name: str) -> tuple[int, runs.History]:
    """A configuration's history, folded, and the CAS sequence of its next event."""
    last, found = await events(nc, name)
    folded = runs.History(name)
    for logged in found:
        folded.observe(logged.event, logged.logged)
    return last, folded


async def _append(gateway: LogGateway, event: runs.ConfigEvent, expected: int) -> int:
    """Append a configuration event if the configuration's last sequence is still ``expected``."""
    headers = {
        "Nats-Msg-Id": event.id,
        "Nats-Expected-Last-Subject-Sequence": str(expected),
        "Nats-Expected-Last-Subject-Sequence-Subject": runs.name_filter(event.name),
    }
    reply = await gateway.nc.request(runs.event_subject(event), runs.encode(event), timeout=5, headers=headers)
    ack = json.loads(reply.data)
    error = ack.get("error")
    if error is None:
        return int(ack["seq"])
    if error.get("err_code") == jsapi.WRONG_LAST_SEQUENCE:
        raise ConflictError(f"configuration {event.name} changed meanwhile; nothing was recorded, try again")
    raise WorkflowError(f"the log refused {type(event).__name__}: {error.get('description')}")


async def deploy(gateway: LogGateway, buckets: Buckets, config: cfg.Config, file: str | None = None) -> Deployment:
    """Record ``config`` as deployed (replacing the one in force of that name, whose runs go
    on) and start a run of it: its ``RunStarted``, then its works. Every work is planned and
    checked (site included) before anything is written: a bad one writes nothing.

    A configuration with a ``schedule`` starts no run now: its schedule (``config-<name>``,
    fired by ``workflow server``'s scheduler) starts one at each firing, ``count`` at most."""
    runs.check_name(config.name)
    run_id = new_id()
    now = time.time()
    plan = cfg.plan(config, run_id, now)
    for planned in plan.works:
        check_site(planned.work.site)
    seq, _ = await history(gateway.nc, config.name)
    schedule = config.schedule
    deployed = runs.ConfigDeployed(name=config.name, time=now, by=gateway.name, source=config.source, file=file,
                                   schedule=None if schedule is None else schedule.spec,
                                   count=None if schedule is None else schedule.count,
                                   timezone=None if schedule is None else schedule.timezone)
    seq = await _append(gateway, deployed, seq)
    await _unschedule(gateway, config.name)  # a redeploy replaces the schedule of the one before
    if schedule is not None:
        label = Work(pipeline=config.name)  # a schedule of a configuration deposits no work of its own
        await schedule_log.add(gateway, runs.schedule_name(config.name), label, schedule.spec,
                               configuration=config.name, timezone=schedule.timezone)
        return Deployment(deployed, None, None)
    started = runs.RunStarted(name=config.name, time=now, by=gateway.name, run=run_id, deployed=deployed.id,
                              works=len(plan.works))
    await _append(gateway, started, seq)
    await deposit(gateway, buckets, [planned.work for planned in plan.works])
    return Deployment(deployed, started, plan)


async def _unschedule(gateway: LogGateway, name: str, reason: str = "replaced") -> None:
    """Remove the schedule of a configuration, if it has one in force."""
    try:
        await schedule_log.remove(gateway, runs.schedule_name(name), reason)
    except (NotFoundError, ConflictError):
        pass  # none, or another writer removed it meanwhile


async def start_scheduled_run(gateway: LogGateway, buckets: Buckets, name: str, run_id: str) -> str:
    """A firing of a scheduled configuration: start its run ``run_id`` (derived from the
    firing, so a firing handled twice, by one scheduler or two, starts one run), unless the
    configuration was removed or has run ``count`` times (then its schedule is removed:
    expired). A run already started has its works deposited again (a no-op, or the end of
    a deposit cut short). Returns what happened: ``started``, ``again``, ``expired`` or ``removed``."""
    for _ in range(3):
        seq, folded = await history(gateway.nc, name)
        current = folded.current
        if current is None:
            return "removed"
        run = folded.runs.get(run_id)
        if run is None and folded.expired:
            await _unschedule(gateway, name, "expired")
            return "expired"
        config = cfg.parse(current.source, current.file or name)
        started_at = time.time() if run is None else run.started.time
        plan = cfg.plan(config, run_id, started_at)
        if run is None:
            started = runs.RunStarted(name=name, time=started_at, by=gateway.name, run=run_id, deployed=current.id,
                                      works=len(plan.works))
            try:
                await _append(gateway, started, seq)
            except ConflictError:
                continue  # another event meanwhile (another scheduler's start of this run?): look again
            folded.observe(started, started_at)
        await deposit(gateway, buckets, [planned.work for planned in plan.works])
        if folded.expired:  # that was the last run: no firing after it
            await _unschedule(gateway, name, "expired")
        return "started" if run is None else "again"
    raise ConflictError(f"configuration {name} kept changing; run {run_id} not started")


async def remove(gateway: LogGateway, name: str, reason: str | None = None) -> runs.ConfigRemoved:
    """Record that a configuration is removed (its runs under way go on; ``stop`` them), and
    its schedule if it has one. NotFoundError if none of that name is deployed."""
    seq, folded = await history(gateway.nc, name)
    if folded.current is None:
        raise NotFoundError(f"no configuration named {name!r} is deployed (see `workflow configs ls`)")
    event = runs.ConfigRemoved(name=name, time=time.time(), by=gateway.name, deployed=folded.current.id,
                               reason=reason)
    await _append(gateway, event, seq)
    await _unschedule(gateway, name, "configuration removed")
    return event


async def names(nc: nats.aio.client.Client) -> list[str]:
    """Every configuration the log has events of, by name (the last event of each subject, at once)."""
    inbox = await Inbox.open(nc, nc.new_inbox())
    found: set[str] = set()
    try:
        request = {"multi_last": [f"{runs.CONFIG_PREFIX}.>"], "batch": LIST_LIMIT}
        await nc.publish(f"$JS.API.DIRECT.GET.{STREAM}", json.dumps(request).encode(), reply=inbox.subject)
        while True:
            reply = await inbox.next(timeout=5)
            if (reply.headers or {}).get("Status") is not None:
                break  # 204: end of the batch; 404: none at all
            logged = _logged(reply)
            if logged is not None:
                found.add(logged.event.name)
    finally:
        await inbox.close()
    return sorted(found)


async def listing(nc: nats.aio.client.Client) -> list[runs.History]:
    """The configurations deployed now, each with its history."""
    histories = await asyncio.gather(*(history(nc, name) for name in await names(nc)))
    return [folded for _, folded in histories if folded.current is not None]


async def statuses(gateway: LogGateway, work_ids: list[str]) -> dict[str, str]:
    """The status of each work (its head's), ``missing`` for one not in the log (yet)."""
    found: dict[str, str] = {}
    for start in range(0, len(work_ids), _HEADS):
        chunk = work_ids[start : start + _HEADS]
        heads = await asyncio.gather(*(gateway.head(work_id) for work_id in chunk))
        for work_id, head in zip(chunk, heads, strict=True):
            found[work_id] = "missing" if head is None else status_after(head.event)
    return found


async def run_state(gateway: LogGateway, name: str, run_id: str | None = None) -> RunState:
    """A run of a configuration (its latest when ``run_id`` is None), with its works' statuses."""
    _, folded = await history(gateway.nc, name)
    run = folded.run(run_id)
    if run is None:
        if run_id is None:
            raise NotFoundError(f"configuration {name!r} has no run yet (see `workflow configs ls`)")
        raise NotFoundError(f"configuration {name!r} has no run {run_id} (its runs: `workflow configs ls --json`)")
    deployed = folded.deployments[run.started.deployed]
    config = cfg.parse(deployed.source, deployed.file or name)
    plan = cfg.plan(config, run.started.run, run.started.time)
    run_slots = runs.slots(plan, run.retries)
    found = await statuses(gateway, [slot.work.id for slot in run_slots if slot.work.id is not None])
    return RunState(folded, run, config, run_slots, found)


async def stop(gateway: LogGateway, operations: Operations, name: str, run_id: str,
               reason: str | None = None) -> tuple[runs.RunStopped, list[str]]:
    """Record that a run is stopped, then cancel each of its works not finished. Returns the
    event and the ids cancelled (a work that finished meanwhile is left as it is)."""
    state = await run_state(gateway, name, run_id)
    if state.run.stopped is not None:
        raise ConflictError(f"run {run_id} of {name} was already stopped")
    seq, _ = await history(gateway.nc, name)
    event = runs.RunStopped(name=name, time=time.time(), by=gateway.name, run=run_id, reason=reason)
    await _append(gateway, event, seq)
    why = f"run {run_id} stopped" + (f": {reason}" if reason else "")
    cancelled: list[str] = []
    for slot in state.slots:
        work_id = slot.work.id
        assert work_id is not None
        if state.statuses.get(work_id) in ("success", "failure", "cancelled", "deleted"):
            continue
        try:
            await operations.cancel(work_id, why)
        except (ConflictError, NotFoundError):
            continue  # finished meanwhile (or never deposited: nothing to cancel)
        cancelled.append(work_id)
    return event, cancelled


async def retry(gateway: LogGateway, buckets: Buckets, name: str, run_id: str) -> runs.RunRetried:
    """Run again what failed or was cancelled in a run, and what followed it: new works take
    their places (recorded in a ``RunRetried``, then deposited). ConflictError while a work
    of the run has not finished, or when nothing failed."""
    state = await run_state(gateway, name, run_id)
    number = len(state.run.retries) + 1
    try:
        made = runs.retry_works(state.slots, state.statuses, number, time.time())
    except ValueError as error:
        raise ConflictError(f"run {run_id} of {name} is still going: {error}; wait, or stop it first") from None
    if not made:
        raise ConflictError(f"run {run_id} of {name} has nothing to retry: every work succeeded")
    seq, _ = await history(gateway.nc, name)
    replaced = {old: work.id for old, work in made.items() if work.id is not None}
    event = runs.RunRetried(name=name, time=time.time(), by=gateway.name, run=run_id, retry=number,
                            replaced=replaced)
    await _append(gateway, event, seq)
    await deposit(gateway, buckets, list(made.values()))
    return event
