"""The autoscaler's rule (workflow.core.scaling.decide), without Slurm or NATS."""

from __future__ import annotations

import pytest

from workflow.core.errors import ValidationError
from workflow.core.scaling import Depth, Job, Limits, decide

UP_TO_5 = Limits(minimum=0, maximum=5)


def jobs(pending: int = 0, running: int = 0) -> list[Job]:
    return [Job(f"10_{i}", pending=True) for i in range(pending)] + [
        Job(f"9_{i}", pending=False) for i in range(running)]


def test_waiting_works_get_one_job_each_up_to_the_maximum():
    assert decide(UP_TO_5, Depth(waiting=3), [], idle_for=0, idle_after=60).submit == 3
    assert decide(UP_TO_5, Depth(waiting=200), [], idle_for=0, idle_after=60).submit == 5


def test_pending_jobs_cover_the_works_they_will_take_so_a_deposit_is_answered_once():
    assert decide(UP_TO_5, Depth(waiting=3), jobs(pending=3), idle_for=0, idle_after=60).submit == 0
    assert decide(UP_TO_5, Depth(waiting=4), jobs(pending=3), idle_for=0, idle_after=60).submit == 1


def test_held_works_beyond_the_running_jobs_lost_their_worker_and_get_a_job():
    assert decide(UP_TO_5, Depth(waiting=0, held=1), [], idle_for=0, idle_after=60).submit == 1
    assert decide(UP_TO_5, Depth(waiting=0, held=3), jobs(running=1), idle_for=0, idle_after=60).submit == 2


def test_running_jobs_with_free_slots_cover_waiting_works_but_busy_ones_do_not():
    two_slots = Limits(maximum=10, works_per_job=2)
    # 2 running jobs, 4 slots, 3 held: 1 free slot covers 1 of 5 waiting; 4 more need 2 jobs.
    assert decide(two_slots, Depth(waiting=5, held=3), jobs(running=2), idle_for=0, idle_after=60).submit == 2
    assert decide(UP_TO_5, Depth(waiting=2, held=2), jobs(running=2), idle_for=0, idle_after=60).submit == 2


def test_never_more_jobs_than_the_maximum_counting_the_ones_owned():
    assert decide(UP_TO_5, Depth(waiting=50, held=4), jobs(running=4), idle_for=0, idle_after=60).submit == 1
    assert decide(UP_TO_5, Depth(waiting=50, held=5), jobs(running=5), idle_for=0, idle_after=60).submit == 0


def test_the_minimum_is_kept_even_when_idle():
    keep_one = Limits(minimum=1, maximum=3)
    assert decide(keep_one, Depth(), [], idle_for=1000, idle_after=60).submit == 1
    assert decide(keep_one, Depth(), jobs(running=3), idle_for=1000, idle_after=60).cancel == ("9_2", "9_1")


def test_idle_jobs_are_cancelled_only_after_the_idle_time_pending_first():
    assert decide(UP_TO_5, Depth(), jobs(pending=1, running=2), idle_for=59, idle_after=60).cancel == ()
    decision = decide(UP_TO_5, Depth(), jobs(pending=1, running=2), idle_for=60, idle_after=60)
    assert decision.cancel == ("10_0", "9_1", "9_0")
    assert "nothing waiting or running" in decision.why


def test_no_job_is_cancelled_while_a_work_is_held():
    assert decide(UP_TO_5, Depth(held=1), jobs(running=3), idle_for=1000, idle_after=0).cancel == ()


def test_a_lowered_maximum_cancels_surplus_pending_jobs_never_running_ones():
    assert decide(Limits(maximum=2), Depth(waiting=9), jobs(pending=2, running=2), 0, 60).cancel == ("10_1", "10_0")
    assert decide(Limits(maximum=1), Depth(waiting=9), jobs(running=3), 0, 60).cancel == ()


def test_array_tasks_sort_by_array_then_task_as_numbers():
    owned = [Job("9_10", pending=True), Job("9_2", pending=True), Job("11", pending=True)]
    assert decide(UP_TO_5, Depth(), owned, idle_for=1, idle_after=0).cancel == ("11", "9_10", "9_2")


@pytest.mark.parametrize(("limits", "field"), [
    (Limits(minimum=-1, maximum=2), "min"), (Limits(minimum=3, maximum=2), "max"), (Limits(maximum=0), "max"),
    (Limits(maximum=2, works_per_job=0), "concurrency")])
def test_wrong_limits_are_refused_naming_the_key(limits, field):
    with pytest.raises(ValidationError, match=rf"scale\.pipelines\.p\.{field}"):
        limits.check("p")
