"""Configurations and their runs in the log: the events, and what a configuration's history says.

Deploying and removing a configuration, and starting, stopping and retrying one of its runs,
are events on the configuration's own subjects, ``wf._config.<name>.<event>`` (``_`` is never
in a pipeline name, so they never meet a work's ``wf.<pipeline>.<id>…``), each appended with
the CAS over ``wf._config.<name>.>`` like a work's: two operators acting on one configuration
at once cannot both succeed on a stale view. Like the schedules' events
(:mod:`workflow.core.schedules`) they are no work events: their own small union, decoded
here; the projector keeps them in its ``other`` table and the resolver passes over them.

A run's works are ordinary works (:mod:`workflow.core.configs` plans them): the log of the
configuration says which runs exist and what was done to them; the works' own events say
what became of each step. Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Annotated, get_args

import msgspec
from ulid import ULID

from workflow.core.configs import Config, Plan
from workflow.core.errors import ValidationError
from workflow.core.events import SCHEMA_VERSION, Version, decoder_of
from workflow.core.ids import new_id
from workflow.core.subjects import PREFIX
from workflow.core.work import NAME_PATTERN, Work

#: The subjects of configuration events: ``wf._config.<name>.<event>``.
CONFIG_PREFIX = f"{PREFIX}._config"
#: At most 57 characters: its schedule is named ``config-<name>`` (a schedule name has 64 at most).
ConfigName = Annotated[str, msgspec.Meta(min_length=1, max_length=57, pattern=NAME_PATTERN)]
SCHEDULE_PREFIX = "config-"


def schedule_name(name: str) -> str:
    """The name of the schedule that starts a scheduled configuration's runs (``schedule ls``)."""
    return f"{SCHEDULE_PREFIX}{name}"


class ConfigEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields common to the events of a configuration (not a work event: see the module)."""

    name: ConfigName
    time: float
    id: str = msgspec.field(default_factory=new_id)
    by: str | None = None
    v: Version = SCHEMA_VERSION


class ConfigDeployed(ConfigEvent, frozen=True, kw_only=True, tag="deployed"):
    """A configuration was deployed (again): ``source`` is the whole file, as read, so every
    run of it can be planned again from the log alone (its works' ids are derived). With a
    ``schedule`` (the server's spec), runs start at its firings, ``count`` of them at most."""

    source: str
    file: str | None = None
    schedule: str | None = None
    count: int | None = None
    #: The IANA zone of the schedule's cron (None: UTC, as every deployment before zones).
    timezone: str | None = None


class ConfigRemoved(ConfigEvent, frozen=True, kw_only=True, tag="removed"):
    """A configuration was removed: it starts no more runs (those under way go on)."""

    deployed: str  # the id of the ConfigDeployed it ends
    reason: str | None = None


class RunStarted(ConfigEvent, frozen=True, kw_only=True, tag="started"):
    """A run of the deployment ``deployed`` began: its works (``works`` of them) follow,
    deposited with ids derived from ``run``."""

    run: str
    deployed: str
    works: int


class RunStopped(ConfigEvent, frozen=True, kw_only=True, tag="stopped"):
    """An operator stopped a run: what had not finished is cancelled."""

    run: str
    reason: str | None = None


class RunRetried(ConfigEvent, frozen=True, kw_only=True, tag="retried"):
    """An operator retried a run: ``replaced`` maps each of its works that failed or was
    cancelled (and each that waited on one) to the new work that takes its place, deposited
    just after; ``retry`` counts the retries of the run (1, 2, …)."""

    run: str
    retry: int
    replaced: dict[str, str] = msgspec.field(default_factory=dict)


AnyConfigEvent = ConfigDeployed | ConfigRemoved | RunStarted | RunStopped | RunRetried
#: Their tags, from the union (never a list kept by hand: see ``core.events.EVENT_TYPES``).
CONFIG_EVENT_TYPES: tuple[str, ...] = tuple(str(kind.__struct_config__.tag) for kind in get_args(AnyConfigEvent))

_encoder = msgspec.json.Encoder()
_decode = decoder_of(AnyConfigEvent, "configuration event")


def encode(event: ConfigEvent) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> AnyConfigEvent:
    """The configuration event in ``data``; ValidationError for anything else (never another error)."""
    event: AnyConfigEvent = _decode(data)
    return event


def event_subject(event: ConfigEvent) -> str:
    return f"{CONFIG_PREFIX}.{event.name}.{event.__struct_config__.tag}"


def name_filter(name: str) -> str:
    """Every event of one configuration (the CAS of each of its events covers it)."""
    return f"{CONFIG_PREFIX}.{name}.>"


def is_config_subject(subject: str) -> bool:
    """Whether ``subject`` is a configuration event's (work readers pass over these)."""
    tokens = subject.split(".")
    return len(tokens) == 4 and tokens[1] == "_config" and tokens[3] in CONFIG_EVENT_TYPES


def check_name(name: str) -> str:
    """``name`` if it can name a configuration (letters, digits, ``-``; one subject token)."""
    try:
        return msgspec.convert(name, ConfigName)
    except msgspec.ValidationError:
        raise ValidationError("name", f"a configuration name is 1-57 letters, digits or '-', got {name!r}") from None


# -- a configuration's history, folded -------------------------------------------------------


@dataclass
class Run:
    """One run as the configuration's log says: when it started, was stopped, retried."""

    started: RunStarted
    started_at: float  # the server's time of the event
    stopped: RunStopped | None = None
    retries: list[RunRetried] = field(default_factory=list)


@dataclass
class History:
    """A configuration's events, folded in order."""

    name: str
    deployments: dict[str, ConfigDeployed] = field(default_factory=dict)  # by event id
    current: ConfigDeployed | None = None  # the deployment in force; None: never, or removed
    deployed_at: float | None = None
    runs: dict[str, Run] = field(default_factory=dict)  # by run id, in start order

    def observe(self, event: AnyConfigEvent, logged: float) -> None:
        """One event of this configuration, in stream order, logged at ``logged`` (server time)."""
        if isinstance(event, ConfigDeployed):
            self.deployments[event.id] = event
            self.current, self.deployed_at = event, logged
        elif isinstance(event, ConfigRemoved):
            if self.current is not None and self.current.id == event.deployed:
                self.current = None
        elif isinstance(event, RunStarted):
            self.runs.setdefault(event.run, Run(event, logged))
        elif event.run in self.runs:
            run = self.runs[event.run]
            if isinstance(event, RunStopped):
                run.stopped = run.stopped or event
            else:
                run.retries.append(event)
                run.stopped = None  # a retried run goes on

    def runs_of(self, deployed: ConfigDeployed) -> int:
        """How many runs a deployment started."""
        return sum(run.started.deployed == deployed.id for run in self.runs.values())

    @property
    def expired(self) -> bool:
        """The deployment in force is scheduled with a ``count`` and has started that many runs."""
        current = self.current
        return current is not None and current.count is not None and self.runs_of(current) >= current.count

    @property
    def state(self) -> str:
        """``removed``, ``expired``, ``scheduled`` (runs at its firings) or ``deployed``."""
        if self.current is None:
            return "removed"
        if self.expired:
            return "expired"
        return "scheduled" if self.current.schedule else "deployed"

    def run(self, run_id: str | None = None) -> Run | None:
        """A run by id, or the latest when ``run_id`` is None (None: no such run)."""
        if run_id is None:
            return next(reversed(self.runs.values()), None)
        return self.runs.get(run_id)


# -- a run's works and what became of them ----------------------------------------------------

#: Statuses of a work that will not change by itself.
_DONE = ("success", "failure", "cancelled", "deleted")


@dataclass(frozen=True)
class Slot:
    """One place of a run: a step's combination, and the work that holds it now (the planned
    one, or the latest that replaced it on a retry)."""

    step: str
    stage: int | None
    index: int
    work: Work


def slots(plan: Plan, retries: list[RunRetried]) -> list[Slot]:
    """The run's places in plan order, each with its current work (retries applied in order)."""
    stage_of = {step.name: step.stage for step in plan.config.steps}
    counters: dict[str, int] = {}
    result: list[Slot] = []
    for planned in plan.works:
        index = counters.get(planned.step, 0)
        counters[planned.step] = index + 1
        result.append(Slot(planned.step, stage_of[planned.step], index, planned.work))
    for retry in retries:
        for position, slot in enumerate(result):
            if slot.work.id in retry.replaced:
                work = replacement(slot.work, retry.replaced, retry.retry, retry.time)
                result[position] = Slot(slot.step, slot.stage, slot.index, work)
    return result


def retry_works(run_slots: list[Slot], statuses: dict[str, str], retry: int, now: float) -> dict[str, Work]:
    """What a retry deposits: a new work for each place whose work did not succeed, and for
    each place that waits (directly or not) for one of those; keyed by the id it replaces,
    in plan order (what a new work waits for comes before it). The new works wait for the
    new ids of what they followed, and for the old ids of what succeeded (which count at
    once). ValueError if a work of the run has not finished."""
    unfinished = [slot.work.id for slot in run_slots if statuses.get(slot.work.id or "") not in _DONE]
    if unfinished:
        raise ValueError(f"{len(unfinished)} work(s) of the run have not finished (e.g. {unfinished[0]})")
    replaced: dict[str, str] = {}
    for slot in run_slots:
        old = slot.work
        assert old.id is not None
        if statuses.get(old.id) != "success" or any(str(p) in replaced for p in old.precursors or []):
            replaced[old.id] = retry_work_id(old.id, retry)
    return {slot.work.id: replacement(slot.work, replaced, retry, now)
            for slot in run_slots if slot.work.id in replaced}


def replacement(old: Work, replaced: dict[str, str], retry: int, now: float) -> Work:
    """The work that takes ``old``'s place at a retry (``replaced``: old id -> new id)."""
    assert old.id is not None
    fields = old.payload
    fields.update(
        id=replaced[old.id], status="created", attempt=0, start=None, stop=None, results=None, creation=now,
        precursors=[replaced.get(str(p), str(p)) for p in old.precursors or []] or None,
        config={**(old.config or {}), "retry": retry, "replaces": old.id},
    )
    for key in ("inputs", "if_steps"):  # results read, and statuses judged, from the works that replace those
        named = fields["config"].get(key)
        if named:
            fields["config"][key] = {
                step: replaced.get(ids, ids) if isinstance(ids, str) else [replaced.get(i, i) for i in ids]
                for step, ids in named.items()
            }
    return Work.from_payload(fields)


def retry_work_id(old: str, retry: int) -> str:
    """The id of the work that replaces ``old`` at a run's ``retry``-th retry: derived, so a
    retried deposit of a retry makes nothing twice; it sorts with ``old``."""
    digest = hashlib.sha256(f"{old}/retry/{retry}".encode()).digest()
    return str(ULID.from_bytes(ULID.from_str(old).bytes[:6] + digest[:10]))


@dataclass(frozen=True)
class StepView:
    """One step of a run: its stage, condition, and how many of its works are in each status."""

    name: str
    stage: int | None
    condition: str
    counts: dict[str, int]

    @property
    def status(self) -> str:
        """The step's status: running while any work is not done; else failure if any
        failed, skipped if all were cancelled, cancelled if some were, success."""
        if any(status not in _DONE for status in self.counts):
            return "running" if "running" in self.counts else "waiting" if set(self.counts) <= {
                "waiting", *_DONE} else "queued"
        if "failure" in self.counts:
            return "failure"
        if set(self.counts) == {"cancelled"}:
            return "cancelled"
        return "cancelled" if "cancelled" in self.counts else "success"


@dataclass(frozen=True)
class RunView:
    """A run as ``configs ps`` shows it: its status, current stage, and each step."""

    run: str
    status: str  # running | success | failure | stopped
    stage: int | str | None  # the earliest stage not finished ("final": the conditional steps)
    steps: list[StepView]


def view(run_id: str, config: Config, run_slots: list[Slot], statuses: dict[str, str], stopped: bool) -> RunView:
    """What a run is now, from its places and the status of each one's work."""
    steps: list[StepView] = []
    for step in config.steps:
        counts: dict[str, int] = {}
        for slot in run_slots:
            if slot.step == step.name:
                status = statuses.get(slot.work.id or "", "unknown")
                counts[status] = counts.get(status, 0) + 1
        steps.append(StepView(step.name, step.stage, step.rule, counts))
    unfinished = [s for s in steps if any(status not in _DONE for status in s.counts)]
    stage: int | str | None = None
    if unfinished:
        first = unfinished[0]
        stage = first.stage if first.stage is not None else "final"
    if stopped:
        status = "stopped"
    elif unfinished:
        status = "running"
    elif any(s.status == "failure" or (s.stage is not None and s.condition == "success" and s.status != "success")
             for s in steps):  # (a conditional step skipped by its if did what it was told)
        status = "failure"
    else:
        status = "success"
    return RunView(run_id, status, stage, steps)
