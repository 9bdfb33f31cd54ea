"""The resolver's bookkeeping, without NATS: what a waiting work waits for, and when."""

from __future__ import annotations

import pytest

from workflow.core import events as ev
from workflow.core.errors import ValidationError
from workflow.core.waits import Cancel, Registry, Release, not_before
from workflow.core.work import Work


def deposited(work_id: str, precursors=(), at: float | None = None) -> ev.Deposited:
    work = Work(pipeline="p", id=work_id, precursors=list(precursors) or None, status="queued")
    return ev.Deposited(work_id=work_id, pipeline="p", time=0, work=work,
                        waits=ev.Waits(precursors=list(precursors), not_before=at))


def succeeded(work_id: str) -> ev.Succeeded:
    return ev.Succeeded(work_id=work_id, pipeline="p", time=0, attempt=1)


def test_a_work_is_released_once_all_its_precursors_succeeded_against_its_last_head():
    registry = Registry(live=True)
    registry.observe(5, "w", deposited("w", ["a", "b"]), now=0)
    assert registry.observe(6, "a", succeeded("a"), now=0) == []
    registry.observe(7, "w", None, now=0)  # a forged message on its subjects moves its head
    [action] = registry.observe(8, "b", succeeded("b"), now=0)
    assert isinstance(action, Release) and action.waiting.seq == 7 and "a, b succeeded" in action.reason
    assert registry.works == {}


def test_a_failed_precursor_cancels_every_work_waiting_for_it_naming_it():
    registry = Registry(live=True)
    registry.observe(1, "w", deposited("w", ["a"]), now=0)
    registry.observe(2, "v", deposited("v", ["a"]), now=0)
    failed = ev.Failed(work_id="a", pipeline="p", time=0, attempt=1, reason="error", will_retry=False)
    actions = registry.observe(3, "a", failed, now=0)
    assert [(type(a), a.waiting.work_id, a.reason) for a in actions] == [
        (Cancel, "v", "precursor a failed"), (Cancel, "w", "precursor a failed")]


def test_a_retried_failure_of_a_precursor_changes_nothing():
    registry = Registry(live=True)
    registry.observe(1, "w", deposited("w", ["a"]), now=0)
    retry = ev.Failed(work_id="a", pipeline="p", time=0, attempt=1, reason="error", will_retry=True)
    assert registry.observe(2, "a", retry, now=0) == [] and "w" in registry.works


def test_while_catching_up_nothing_is_done_and_going_live_releases_what_is_due():
    registry = Registry()
    registry.observe(1, "w", deposited("w", ["a"]), now=0)
    registry.observe(2, "d", deposited("d", at=50), now=0)
    registry.observe(3, "later", deposited("later", at=500), now=0)
    assert registry.observe(4, "a", succeeded("a"), now=0) == []
    actions = registry.go_live(now=100)
    assert sorted(a.waiting.work_id for a in actions) == ["d", "w"]
    assert registry.next_due() == 500 and registry.due(now=499) == []
    [late] = registry.due(now=500)
    assert late.waiting.work_id == "later" and late.reason == "released: its time came"


def test_a_work_released_or_cancelled_by_someone_else_is_forgotten():
    registry = Registry(live=True)
    registry.observe(1, "w", deposited("w", ["a"]), now=0)
    registry.observe(2, "w", ev.Cancelled(work_id="w", pipeline="p", time=0), now=0)
    assert registry.observe(3, "a", succeeded("a"), now=0) == [] and registry.pending_precursors() == set()


def test_a_delay_reads_seconds_minutes_hours_and_an_at_time_reads_iso():
    assert not_before("30s", None, 100) == 130 and not_before("2m", None, 0) == 120
    assert not_before("1h", None, 0) == 3600 and not_before(5, None, 0) == 5
    assert not_before(None, "1970-01-01T00:01:00Z", 0) == 60 and not_before(None, None, 0) is None
    for bad in ({"delay": "soon"}, {"delay": "-1s"}, {"at": "tomorrow"}, {"delay": "1s", "at": 5}):
        with pytest.raises(ValidationError):
            not_before(bad.get("delay"), bad.get("at"), 0)
