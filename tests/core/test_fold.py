"""The fold and the events: pure, no NATS."""

from __future__ import annotations

import pytest

from workflow import Work
from workflow.core import events as ev
from workflow.core.fold import FoldError, evolve, fold


def deposited(**fields) -> ev.Deposited:
    work = Work(pipeline="p", id="W1", parameters={"a": 1}, **fields)
    return ev.Deposited(work_id="W1", pipeline="p", time=10.0, work=work)


def started(attempt: int, t: float = 11.0) -> ev.Started:
    return ev.Started(work_id="W1", pipeline="p", time=t, attempt=attempt, queue_seq=1)


def test_a_deposited_work_is_queued():
    state = evolve(None, deposited())
    assert state.status == "queued" and state.id == "W1" and state.attempt == 0


def test_success_path_sets_running_then_results_and_times():
    state = fold([
        deposited(),
        started(1, 11.0),
        ev.Succeeded(work_id="W1", pipeline="p", time=12.0, attempt=1, results={"sum": 3}, products=["a.fits"]),
    ])
    assert state.status == "success"
    assert state.results == {"sum": 3}
    assert state.products == ["a.fits"]
    assert (state.start, state.stop, state.attempt) == (11.0, 12.0, 1)


def test_a_failure_with_retries_left_requeues_and_a_final_one_fails():
    retrying = ev.Failed(work_id="W1", pipeline="p", time=12.0, attempt=1, reason="error",
                         will_retry=True, error="boom", traceback="Traceback ...")
    state = fold([deposited(), started(1), retrying])
    assert state.status == "queued"
    assert state.results["error"] == "boom" and state.results["reason"] == "error"
    final = ev.Failed(work_id="W1", pipeline="p", time=14.0, attempt=2, reason="timeout", will_retry=False)
    state = fold([started(2, 13.0), final], state)
    assert state.status == "failure" and state.attempt == 2 and state.results["reason"] == "timeout"


def test_cancel_and_requeue():
    state = fold([deposited(), ev.Cancelled(work_id="W1", pipeline="p", time=11.0, reason="oops")])
    assert state.status == "cancelled" and state.stop == 11.0
    again = ev.Requeued(work_id="W1", pipeline="p", time=12.0,
                        work=Work(pipeline="p", id="W1", priority=5, attempt=0))
    state = evolve(state, again)
    assert state.status == "queued" and state.priority == 5 and state.stop is None


def test_events_before_a_deposit_or_a_second_deposit_are_refused():
    with pytest.raises(FoldError):
        evolve(None, started(1))
    with pytest.raises(FoldError):
        fold([deposited(), deposited()])


def test_events_round_trip_through_json_and_keep_their_type():
    for event in (
        deposited(),
        started(1),
        ev.Succeeded(work_id="W1", pipeline="p", time=1.0, attempt=1, results={"x": [1, 2]}),
        ev.Failed(work_id="W1", pipeline="p", time=1.0, attempt=1, reason="lost", will_retry=False),
        ev.Cancelled(work_id="W1", pipeline="p", time=1.0),
        ev.Requeued(work_id="W1", pipeline="p", time=1.0, work=Work(pipeline="p")),
    ):
        data = ev.encode(event)
        assert b'"type":"' + type(event).__name__.lower().encode() in data
        assert ev.decode(data) == event


def test_an_event_written_by_an_older_schema_still_decodes():
    old = b'{"type":"cancelled","work_id":"W1","pipeline":"p","time":1.5,"id":"E1","v":1}'
    event = ev.decode(old)
    assert isinstance(event, ev.Cancelled) and event.reason is None and event.by is None


def test_an_oversized_event_is_refused_with_its_size_and_the_limit():
    from workflow.core.errors import PayloadTooLargeError

    big = ev.Succeeded(work_id="W1", pipeline="p", time=1.0, attempt=1, results={"blob": "x" * 5000})
    with pytest.raises(PayloadTooLargeError, match="at most 1,000 bytes"):
        ev.encode(big, limit=1000)


def succeeded(attempt: int = 1, t: float = 12.0) -> ev.Succeeded:
    return ev.Succeeded(work_id="W1", pipeline="p", time=t, attempt=attempt)


def test_the_fold_refuses_a_second_final_outcome_and_a_start_after_the_end():
    done = fold([deposited(), started(1), succeeded()])
    for after in (succeeded(2, 13.0), started(2, 13.0), ev.Cancelled(work_id="W1", pipeline="p", time=13.0),
                  ev.Failed(work_id="W1", pipeline="p", time=13.0, attempt=1, reason="error", will_retry=False)):
        with pytest.raises(FoldError, match="after the work ended"):
            evolve(done, after)


def test_the_fold_refuses_an_outcome_while_no_attempt_runs_but_a_requeue_after_the_end_is_allowed():
    with pytest.raises(FoldError, match="while no attempt runs"):
        fold([deposited(), succeeded()])
    done = fold([deposited(), started(1), succeeded()])
    again = evolve(done, ev.Requeued(work_id="W1", pipeline="p", time=13.0, work=Work(pipeline="p", id="W1")))
    assert again.status == "queued"
