"""Recurring schedules: what a schedule is, the events that add and remove one, and what a
firing deposits. Pure: no clock, no I/O (the scheduler in :mod:`workflow.followers.scheduler`
does those).

A schedule is a name, a spec (``@every 10m``, a 6-field cron ``0 0 2 * * *``, or
``@daily``…) and the work each firing deposits. Adding and removing one are events in the
log, on the schedule's own subjects ``wf._schedule.<name>.added|removed`` (``_`` is never
in a pipeline name, so these never meet a work's ``wf.<pipeline>.<id>…``). They are not
work events: they form their own small union, decoded here, and the work readers (the
projector, the resolver) pass over their subjects.

A firing deposits one work whose id is *derived* from the schedule's definition and the
firing time (:func:`firing_id`): every scheduler that handles the same firing derives the
same id, and the log takes a work's first event only once (CAS on sequence 0), so a
firing deposits exactly once however many servers handle it.

The specs accepted here are exactly the nats-server's message schedules (ADR-51) subset
that workflow promises: ``tests/log/test_schedules.py`` checks that the server accepts
every example this module accepts.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import msgspec
from ulid import ULID

from workflow.core.errors import ValidationError
from workflow.core.events import SCHEMA_VERSION, Version, decoder_of
from workflow.core.ids import new_id
from workflow.core.subjects import PREFIX
from workflow.core.work import NAME_PATTERN, Work

#: The subjects of schedule events: ``wf._schedule.<name>.added`` and ``….removed``.
SCHEDULE_PREFIX = f"{PREFIX}._schedule"
#: The subjects of the NATS server's timers and their firings (``workflow.log.schedules``).
TIMER_PREFIX = "wfsched"
ScheduleName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NAME_PATTERN)]

#: The named schedules the server knows (cron shorthands, in UTC).
PREDEFINED = {
    "@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *", "@hourly": "0 0 * * * *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
#: The six cron fields: name, lowest, highest, names (the first name is ``lowest``).
_FIELDS: tuple[tuple[str, int, int, list[str]], ...] = (
    ("seconds", 0, 59, []), ("minutes", 0, 59, []), ("hours", 0, 23, []),
    ("day-of-month", 1, 31, []), ("month", 1, 12, _MONTHS), ("day-of-week", 0, 6, _DAYS),
)
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_CRON_EXAMPLE = '"0 0 2 * * *" (02:00:00 UTC daily)'


# -- specs --------------------------------------------------------------------------------


def schedule_spec(every: str | None = None, cron: str | None = None) -> str:
    """The server's ``Nats-Schedule`` value for ``--every`` or ``--cron`` (exactly one).

    ``every`` is a duration of at least one second: ``10m``, ``1h30m``, ``90s``. ``cron``
    is 6 fields, seconds first, in UTC or the schedule's zone (``0 0 2 * * *`` is 02:00 every day), or one of
    ``@hourly @daily @midnight @weekly @monthly @yearly @annually``. Anything else is a
    ValidationError that says what was expected.
    """
    if (every is None) == (cron is None):
        raise ValidationError("schedule", "give exactly one of --every (e.g. 10m) or --cron (e.g. \"0 0 2 * * *\")")
    if every is not None:
        return f"@every {_checked_every(every)}"
    assert cron is not None
    return _checked_cron(cron)


def check_timezone(name: str | None) -> str | None:
    """``name`` if it is an IANA time zone the stdlib ``zoneinfo`` knows (``America/Vancouver``),
    None for None or ``UTC`` (a cron without a zone is read in UTC, as before zones existed).

    The zone is checked here, at add or deploy, so a typo is one clear error before anything
    is written, not a timer the NATS server refuses later (``Nats-Schedule-Time-Zone``). The
    zones come from the system's tz database (``/usr/share/zoneinfo``) or, where there is none,
    the ``tzdata`` package (a dependency for that reason)."""
    if name is None:
        return None
    text = name.strip()
    if text.upper() == "UTC":
        return None
    try:
        if not text or text.startswith("/") or ".." in text:
            raise ValueError(text)
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        close = sorted(zone for zone in available_timezones() if zone.lower() == text.lower())
        hint = f"; did you mean {close[0]}?" if close else " (an IANA name like America/Vancouver, or UTC)"
        raise ValidationError("timezone", f"unknown time zone {name!r}{hint}") from None
    return text


def every_seconds(text: str) -> float:
    """Seconds in a duration like ``10m``, ``1h30m``, ``1.5h`` (units h, m, s, ms)."""
    compact = text.strip().replace(" ", "")
    if not _DURATION.match(compact):
        raise ValidationError("every", f"expected a duration like 30s, 10m, 1h30m (units h, m, s), got {text!r}")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(compact))


def _checked_every(text: str) -> str:
    seconds = every_seconds(text)
    if seconds < 1:
        raise ValidationError("every", f"the shortest interval is 1s, got {text!r}")
    return text.strip().replace(" ", "")


def _checked_cron(text: str) -> str:
    spec = " ".join(text.split())
    if spec.startswith("@"):
        if spec.lower() not in PREDEFINED:
            raise ValidationError(
                "cron", f"unknown shorthand {spec!r}; known: {', '.join(PREDEFINED)} (or use --every for @every)"
            )
        return spec.lower()
    fields = spec.split(" ")
    if len(fields) != 6:
        raise ValidationError(
            "cron", f"expected 6 fields (seconds minutes hours day-of-month month day-of-week, in UTC), got "
            f"{len(fields)} in {text!r}; e.g. {_CRON_EXAMPLE}"
        )
    for value, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        for item in value.split(","):
            _check_cron_item(item, name, low, high, names, text)
    return spec


def _check_cron_item(item: str, name: str, low: int, high: int, names: list[str], text: str) -> None:
    """One comma-separated item of a cron field: ``*``, ``N``, ``N-M``, each with ``/STEP``."""
    base, slash, step = item.partition("/")
    if slash and not (step.isdigit() and int(step) >= 1):
        raise ValidationError("cron", f"{name}: a step is a whole number of 1 or more, got {item!r} in {text!r}")
    if base == "*":
        return
    first, dash, last = base.partition("-")
    start = _cron_number(first, name, low, high, names, text)
    if dash:
        end = _cron_number(last, name, low, high, names, text)
        if start > end:
            raise ValidationError("cron", f"{name}: range {base!r} runs backwards in {text!r}")
    elif slash:
        raise ValidationError("cron", f"{name}: a step needs * or a range before it (*/{step}), got {item!r}")


def _cron_number(token: str, name: str, low: int, high: int, names: list[str], text: str) -> int:
    if token.lower() in names:
        return low + names.index(token.lower())
    if not token.isdigit() or not low <= int(token) <= high:
        allowed = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
        raise ValidationError("cron", f"{name}: expected {allowed}, got {token!r} in {text!r}; e.g. {_CRON_EXAMPLE}")
    return int(token)


def next_firing(spec: str, after: float, since: float | None = None, timezone: str | None = None) -> float | None:
    """When a schedule of ``spec`` (as :func:`schedule_spec` gives it) next fires after
    ``after`` (unix seconds, UTC), for ``schedule ls`` and ``configs ls``. An ``@every``
    schedule counts its intervals from ``since`` (when it was added; ``after`` if unknown).
    A cron's day matches its day-of-month *or* its day-of-week when both are restricted,
    both otherwise (as cron does). None if nothing matches within five years.

    A cron with a ``timezone`` matches the wall clock of that zone (``@every`` has no zone).
    It fires at every instant whose wall time there matches, as the NATS server's cron
    does (``server/cron.go``, after robfig/cron: it steps through instants and compares
    their wall fields). So across DST a wall time in the skipped hour (02:30 on the spring
    day in America/Vancouver) does not fire that day, and one in the repeated hour (01:30 on
    the autumn day) fires twice, at 01:30 PDT and an hour later at 01:30 PST."""
    if spec.startswith("@every "):
        interval = every_seconds(spec.removeprefix("@every "))
        origin = after if since is None else min(since, after)
        return origin + (math.floor((after - origin) / interval) + 1) * interval
    fields = PREDEFINED.get(spec, spec).split()
    if len(fields) != 6:
        return None
    allowed = [_expand(value, low, high, names) for value, (_, low, high, names) in zip(fields, _FIELDS, strict=True)]
    seconds, minutes, hours, days, months, weekdays = (sorted(values) for values in allowed)
    either = not fields[3].startswith("*") and not fields[5].startswith("*")
    zone = UTC if timezone is None else ZoneInfo(timezone)
    today = datetime.fromtimestamp(math.floor(after), zone) - timedelta(days=1)  # (a day early: safe, cheap)
    found: float | None = None
    for offset in range(366 * 5):
        day = (today + timedelta(days=offset)).date()
        if day.month not in months:
            continue
        by_date, by_weekday = day.day in days, (day.weekday() + 1) % 7 in weekdays  # cron: Sunday is 0
        if not ((by_date or by_weekday) if either else (by_date and by_weekday)):
            continue
        for hour in hours:
            for minute in minutes:
                for moment in _instants(datetime(day.year, day.month, day.day, hour, minute), zone):
                    if found is not None and moment > found + _LONGEST_SHIFT:
                        return found  # instants are in wall order beyond a DST shift: none earlier follows
                    if moment + 59 <= after:
                        continue
                    for second in seconds:
                        if moment + second > after:
                            found = moment + second if found is None else min(found, moment + second)
                            break
    return found


#: The longest DST shift of any zone (seconds): wall times are in order beyond it.
_LONGEST_SHIFT = 2 * 3600


def _instants(wall: datetime, zone: Any) -> list[float]:
    """The instants (unix seconds) whose wall time in ``zone`` is the minute ``wall`` (naive):
    none in a skipped hour, two in a repeated one, one otherwise."""
    found = []
    for fold in (0, 1):
        moment = wall.replace(tzinfo=zone, fold=fold).timestamp()
        if datetime.fromtimestamp(moment, zone).replace(tzinfo=None) == wall and moment not in found:
            found.append(moment)
    return found


def _expand(value: str, low: int, high: int, names: list[str]) -> set[int]:
    """The numbers a (checked) cron field allows: ``*``, ``N``, ``N-M``, each with ``/STEP``, by commas."""
    allowed: set[int] = set()
    for item in value.split(","):
        base, _, step = item.partition("/")
        if base == "*":
            first, last = low, high
        else:
            start, _, end = base.partition("-")
            first = low + names.index(start.lower()) if start.lower() in names else int(start)
            last = (low + names.index(end.lower()) if end.lower() in names else int(end)) if end else (
                high if step else first)
        allowed.update(range(first, last + 1, int(step) if step else 1))
    return allowed


# -- events -------------------------------------------------------------------------------


class ScheduleEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=str.lower):
    """Fields common to the events of a schedule (not a work event: see the module)."""

    name: ScheduleName
    time: float
    id: str = msgspec.field(default_factory=new_id)
    by: str | None = None
    v: Version = SCHEMA_VERSION


class ScheduleAdded(ScheduleEvent, frozen=True, kw_only=True):
    """An operator added a schedule: from now on, each firing of ``schedule`` (the
    server's ``Nats-Schedule`` value) deposits one copy of ``work``."""

    schedule: str
    work: Work
    #: The IANA zone a cron's fields are read in (``America/Vancouver``); None: UTC (every
    #: event written before zones existed reads so). Sent to the NATS server with the timer.
    timezone: str | None = None
    #: Set when the schedule starts runs of a pipeline configuration (:mod:`workflow.core.runs`)
    #: instead of depositing ``work`` (then only a label: the configuration's name as pipeline).
    configuration: str | None = None


class ScheduleRemoved(ScheduleEvent, frozen=True, kw_only=True):
    """An operator removed a schedule: it fires no more (a firing before this event still counts)."""

    added: str  # the id of the ScheduleAdded it ends
    reason: str | None = None


AnyScheduleEvent = ScheduleAdded | ScheduleRemoved

_encoder = msgspec.json.Encoder()
_decode = decoder_of(AnyScheduleEvent, "schedule event")


def encode(event: ScheduleEvent) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> AnyScheduleEvent:
    """The schedule event in ``data``; ValidationError for anything else (never another error)."""
    event: AnyScheduleEvent = _decode(data)
    return event


def event_subject(event: ScheduleEvent) -> str:
    return f"{SCHEDULE_PREFIX}.{event.name}.{'added' if isinstance(event, ScheduleAdded) else 'removed'}"


def name_filter(name: str) -> str:
    """Every event of one schedule (the CAS of an add or a remove covers it)."""
    return f"{SCHEDULE_PREFIX}.{name}.>"


def is_schedule_subject(subject: str) -> bool:
    """Whether ``subject`` is a schedule event's (work readers pass over these)."""
    tokens = subject.split(".")
    return len(tokens) == 4 and tokens[1] == "_schedule" and tokens[3] in ("added", "removed")


def check_name(name: str) -> str:
    """``name`` if it can name a schedule (letters, digits, ``-``; one subject token)."""
    try:
        return msgspec.convert(name, ScheduleName)
    except msgspec.ValidationError:
        raise ValidationError("name", f"a schedule name is 1-64 letters, digits or '-', got {name!r}") from None


# -- firings ------------------------------------------------------------------------------


def firing_id(added_id: str, fired_at: float) -> str:
    """The id of the work a firing deposits: a ULID whose time is the firing's (so works
    sort by firing) and whose rest is a hash of the schedule's definition and that time.
    The same firing gives the same id wherever it is handled; another firing, another id."""
    millis = round(fired_at * 1000)
    digest = hashlib.sha256(f"{added_id}/{millis}".encode()).digest()
    return str(ULID.from_bytes(millis.to_bytes(6, "big") + digest[:10]))


def schedule_user(name: str) -> str:
    """The ``user`` (and ``by``) of every work a schedule deposits: ``workflow ls --user schedule:NAME``."""
    return f"schedule:{name}"


def firing_work(added: ScheduleAdded, fired_at: float) -> Work:
    """The work one firing of ``added`` deposits: its template, with the derived id, the
    firing time as creation, and the schedule as user."""
    fields: dict[str, Any] = msgspec.structs.asdict(added.work)
    fields.update(id=firing_id(added.id, fired_at), creation=fired_at, user=schedule_user(added.name),
                  status="queued", precursors=None)
    return Work(**fields)


@dataclass
class Definition:
    """One schedule as the log says: its ``ScheduleAdded``, and when it was removed (if)."""

    added: ScheduleAdded
    added_at: float  # the server's time of the event (the stream's timestamp)
    removed_at: float | None = None


@dataclass
class Schedules:
    """Every schedule the log has defined, folded from its schedule events in order."""

    definitions: dict[str, Definition] = field(default_factory=dict)  # by ScheduleAdded id
    active: dict[str, str] = field(default_factory=dict)  # name -> ScheduleAdded id

    def observe(self, event: AnyScheduleEvent, logged: float) -> None:
        """One schedule event, in stream order, logged at ``logged`` (server time)."""
        if isinstance(event, ScheduleAdded):
            if event.name not in self.active:  # a second add without a remove was refused by the CAS
                self.definitions[event.id] = Definition(event, logged)
                self.active[event.name] = event.id
            return
        if self.active.get(event.name) == event.added:
            self.definitions[event.added].removed_at = logged
            del self.active[event.name]

    def current(self) -> list[Definition]:
        """The schedules in force, by name."""
        return [self.definitions[self.active[name]] for name in sorted(self.active)]

    def firing(self, added_id: str, fired_at: float) -> ScheduleAdded | None:
        """The schedule a firing at ``fired_at`` belongs to, if it deposits: the definition
        exists and was not removed before the firing. None: nothing to deposit."""
        definition = self.definitions.get(added_id)
        if definition is None or (definition.removed_at is not None and fired_at >= definition.removed_at):
            return None
        return definition.added
