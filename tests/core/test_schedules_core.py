"""The pure part of schedules: specs, events, derived firing ids, what a firing deposits."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from workflow import Work
from workflow.core import schedules as sch
from workflow.core.errors import ValidationError


@pytest.mark.parametrize(("every", "spec"), [("10m", "@every 10m"), ("1h30m", "@every 1h30m"), ("1s", "@every 1s"),
                                             ("1.5h", "@every 1.5h"), (" 90s ", "@every 90s")])
def test_every_accepts_go_durations_of_a_second_or_more(every, spec):
    assert sch.schedule_spec(every=every) == spec


@pytest.mark.parametrize(("every", "why"), [
    ("500ms", "shortest interval is 1s"), ("10", "expected a duration"), ("ten minutes", "expected a duration"),
    ("0s", "shortest"), ("", "duration"),
])
def test_every_refuses_what_is_not_a_duration_of_a_second_or_more(every, why):
    with pytest.raises(ValidationError, match=why):
        sch.schedule_spec(every=every)


@pytest.mark.parametrize("cron", ["0 0 2 * * *", "*/5 * * * * *", "0 30 9 * * mon-fri", "0 0 0 1,15 * *",
                                  "0 0 0 * jan-mar sun", "0 0-30/10 * * * *", "59 59 23 31 12 6"])
def test_cron_accepts_six_utc_fields(cron):
    assert sch.schedule_spec(cron=cron) == cron


@pytest.mark.parametrize("shorthand", ["@daily", "@HOURLY", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"])
def test_cron_accepts_the_servers_shorthands(shorthand):
    assert sch.schedule_spec(cron=shorthand) == shorthand.lower()


@pytest.mark.parametrize(("cron", "why"), [
    ("0 0 2 * *", "expected 6 fields"), ("0 0 24 * * *", "hours: expected 0-23"), ("60 * * * * *", "seconds"),
    ("0 0 0 0 * *", "day-of-month: expected 1-31"), ("0 0 0 * 13 *", "month"), ("0 0 0 * * 7", "day-of-week"),
    ("0 0 5-2 * * *", "runs backwards"), ("*/0 * * * * *", "step"), ("5/2 * * * * *", "needs \\* or a range"),
    ("@sometimes", "unknown shorthand"), ("0 0 0 ? * *", "day-of-month"), ("0 0 0 L * *", "day-of-month"),
])
def test_cron_refuses_with_a_line_that_says_what_was_expected(cron, why):
    with pytest.raises(ValidationError, match=why):
        sch.schedule_spec(cron=cron)


def test_exactly_one_of_every_and_cron():
    for every, cron in [(None, None), ("1s", "@daily")]:
        with pytest.raises(ValidationError, match="exactly one"):
            sch.schedule_spec(every=every, cron=cron)


@pytest.mark.parametrize("name", ["a_b", "a.b", "", "x" * 65, "a b", "*"])
def test_a_schedule_name_is_one_subject_token(name):
    with pytest.raises(ValidationError, match="schedule name"):
        sch.check_name(name)


def _added(name: str = "nightly") -> sch.ScheduleAdded:
    return sch.ScheduleAdded(name=name, time=1.0, schedule="@every 1s",
                             work=Work(pipeline="calibrate", parameters={"a": 1}, priority=4, tags=["x"]))


@given(st.floats(min_value=1e9, max_value=4e9))
def test_a_firing_id_is_a_ulid_at_the_firing_time_and_the_same_wherever_it_is_derived(fired_at):
    added = _added()
    work_id = sch.firing_id(added.id, fired_at)
    assert work_id == sch.firing_id(added.id, fired_at)
    assert ULID.from_str(work_id).milliseconds == round(fired_at * 1000)
    assert work_id != sch.firing_id(added.id, fired_at + 1) != sch.firing_id(sch.new_id(), fired_at)


def test_a_firing_deposits_the_template_with_the_derived_id_and_the_schedule_as_user():
    added = _added()
    work = sch.firing_work(added, 1_800_000_000.25)
    assert work.id == sch.firing_id(added.id, 1_800_000_000.25) and work.creation == 1_800_000_000.25
    assert (work.pipeline, work.parameters, work.priority, work.tags) == ("calibrate", {"a": 1}, 4, ["x"])
    assert work.user == "schedule:nightly" and work.status == "queued"


def test_schedule_events_round_trip_on_their_own_subjects_and_are_no_work_events():
    added = _added()
    removed = sch.ScheduleRemoved(name="nightly", time=2.0, added=added.id, reason="done")
    assert sch.decode(sch.encode(added)) == added and sch.decode(sch.encode(removed)) == removed
    assert sch.event_subject(added) == "wf._schedule.nightly.added"
    assert sch.event_subject(removed) == "wf._schedule.nightly.removed"
    assert sch.is_schedule_subject("wf._schedule.nightly.added")
    assert not sch.is_schedule_subject("wf.calibrate.01J.queued.local.3")
    assert not sch.is_schedule_subject("wf._schedule.nightly.queued.a.b")  # forged: still the projector's to reject
    with pytest.raises(ValidationError):
        sch.decode(b'{"type": "deposited"}')


def test_a_firing_deposits_while_its_schedule_is_in_force_and_not_from_its_removal_on():
    schedules = sch.Schedules()
    added = _added()
    schedules.observe(added, logged=100.0)
    assert [d.added for d in schedules.current()] == [added]
    assert schedules.firing(added.id, 150.0) == added
    schedules.observe(sch.ScheduleRemoved(name="nightly", time=0, added=added.id), logged=200.0)
    assert schedules.current() == []
    assert schedules.firing(added.id, 199.9) == added  # fired before the removal: it counts
    assert schedules.firing(added.id, 200.0) is None
    assert schedules.firing("unknown", 150.0) is None


def test_a_remove_of_another_definition_changes_nothing():
    schedules = sch.Schedules()
    first, second = _added(), _added()
    schedules.observe(first, 1.0)
    schedules.observe(sch.ScheduleRemoved(name="nightly", time=0, added=first.id), 2.0)
    schedules.observe(second, 3.0)
    schedules.observe(sch.ScheduleRemoved(name="nightly", time=0, added=first.id), 4.0)  # stale
    assert [d.added for d in schedules.current()] == [second]


_NOW = datetime(2026, 12, 6, 3, 20, 15, tzinfo=UTC).timestamp()  # a Sunday


@pytest.mark.parametrize(("spec", "expected"), [
    ("0 0 2 * * *", "2026-12-07T02:00:00"),        # tomorrow 02:00
    ("* * * * * *", "2026-12-06T03:20:16"),        # the next second
    ("0 */15 * * * *", "2026-12-06T03:30:00"),
    ("30 20 3 * * *", "2026-12-06T03:20:30"),      # later this minute
    ("0 0 0 * * 0", "2026-12-13T00:00:00"),        # next Sunday (today's midnight is past)
    ("0 0 12 13 * fri", "2026-12-11T12:00:00"),    # day-of-month or day-of-week, both restricted
    ("0 0 0 1 jan *", "2027-01-01T00:00:00"),
    ("@daily", "2026-12-07T00:00:00"),
    ("0 0 0 31 2 *", None),                        # never
])
def test_the_next_firing_of_a_cron(spec, expected):
    found = sch.next_firing(spec, _NOW)
    assert (None if found is None else datetime.fromtimestamp(found, UTC).isoformat()[:19]) == expected


def test_the_next_firing_of_an_every_counts_from_when_it_was_added():
    added = _NOW - 25 * 60 - 15  # 02:55:00
    assert sch.next_firing("@every 10m", _NOW, since=added) == added + 30 * 60  # 03:25:00
    assert sch.next_firing("@every 10m", _NOW) == _NOW + 600


# -- time zones ------------------------------------------------------------------------------

_VANCOUVER = "America/Vancouver"


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()[:19]


@pytest.mark.parametrize(("spec", "after", "expected"), [
    ("0 0 2 * * *", "2026-12-06T03:20:15", "2026-12-06T10:00:00"),    # 02:00 PST is 10:00 UTC (winter)
    ("0 0 2 * * *", "2026-07-01T00:00:00", "2026-07-01T09:00:00"),    # 02:00 PDT is 09:00 UTC (summer)
    ("0 0 0 * * 1", "2026-12-07T07:00:00", "2026-12-07T08:00:00"),    # Monday 00:00 PST is 08:00 UTC (Monday 7th)
    ("@daily", "2026-12-06T03:20:15", "2026-12-06T08:00:00"),         # the shorthands are local too
])
def test_a_cron_with_a_zone_matches_that_zones_wall_clock(spec, after, expected):
    assert _iso(sch.next_firing(spec, _utc(after), timezone=_VANCOUVER)) == expected
    assert _iso(sch.next_firing(spec, _utc(after))) != expected  # and not UTC's


def _firings(spec: str, start: str, count: int) -> list[str | None]:
    """The next ``count`` firings after ``start`` (UTC), each computed from the one before (as the server does)."""
    moments: list[float] = [_utc(start)]
    for _ in range(count):
        later = sch.next_firing(spec, moments[-1], timezone=_VANCOUVER)
        assert later is not None
        moments.append(later)
    return [_iso(m) for m in moments[1:]]


def test_a_firing_in_the_hour_skipped_in_spring_does_not_fire_that_day():
    # America/Vancouver 2026-03-08: 02:00 PST jumps to 03:00 PDT (10:00 UTC); 02:30 does not exist that day
    assert _firings("0 30 2 * * *", "2026-03-06T12:00:00", 3) == [
        "2026-03-07T10:30:00",  # 02:30 PST
        "2026-03-09T09:30:00",  # 02:30 PDT: none on the 8th
        "2026-03-10T09:30:00",
    ]
    # every half hour: 01:30 PST, then straight to 03:00 PDT
    assert _firings("0 */30 * * * *", "2026-03-08T09:15:00", 3) == [
        "2026-03-08T09:30:00", "2026-03-08T10:00:00", "2026-03-08T10:30:00"]


def test_a_firing_in_the_hour_repeated_in_autumn_fires_twice():
    # America/Vancouver 2026-11-01: 02:00 PDT falls back to 01:00 PST; 01:30 happens at 08:30 and 09:30 UTC
    assert _firings("0 30 1 * * *", "2026-11-01T00:00:00", 3) == [
        "2026-11-01T08:30:00",  # 01:30 PDT
        "2026-11-01T09:30:00",  # 01:30 PST, an hour later
        "2026-11-02T09:30:00",
    ]
    # every half hour: one firing per half hour of real time, through both passes of 01:xx
    assert _firings("0 */30 * * * *", "2026-11-01T07:45:00", 5) == [
        "2026-11-01T08:00:00", "2026-11-01T08:30:00", "2026-11-01T09:00:00", "2026-11-01T09:30:00",
        "2026-11-01T10:00:00"]


def test_an_unknown_zone_is_a_clear_error_naming_it_and_utc_is_no_zone():
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        sch.check_timezone("Mars/Olympus")
    with pytest.raises(ValidationError, match="did you mean America/Vancouver"):
        sch.check_timezone("america/vancouver")
    with pytest.raises(ValidationError, match="unknown time zone"):
        sch.check_timezone("../../etc/passwd")
    assert sch.check_timezone(_VANCOUVER) == _VANCOUVER
    assert sch.check_timezone("UTC") is None and sch.check_timezone(None) is None


def test_a_schedule_event_written_before_zones_reads_as_utc():
    added = sch.ScheduleAdded(name="nightly", time=1.0, schedule="0 0 2 * * *", work=Work(pipeline="alpha"))
    payload = msgspec.json.decode(sch.encode(added))
    del payload["timezone"]
    old = sch.decode(msgspec.json.encode(payload))
    assert isinstance(old, sch.ScheduleAdded) and old.timezone is None
    zoned = msgspec.structs.replace(added, timezone=_VANCOUVER)
    assert sch.decode(sch.encode(zoned)) == zoned
