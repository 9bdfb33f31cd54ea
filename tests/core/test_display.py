"""How events read in ``workflow history``."""

from workflow.core import events as ev
from workflow.core.display import describe
from workflow.core.work import Work


def test_a_start_claimed_by_filter_says_so_and_a_bucket_start_does_not():
    common = {"work_id": "w1", "pipeline": "p", "time": 1.0, "attempt": 1, "queue_seq": 7, "host": "h:1"}
    assert describe(ev.Started(**common, via="filter")) == "attempt 1 started on h:1 (claimed by filter)"
    assert describe(ev.Started(**common)) == "attempt 1 started on h:1"


def test_a_delete_says_the_history_stays_and_gives_its_reason():
    line = describe(ev.Deleted(work_id="w1", pipeline="p", time=1.0, reason="cleanup"))
    assert line == "deleted (hidden from lists; its history stays): cleanup"


def test_a_deposit_waiting_on_an_if_expression_quotes_the_expression_not_a_rule():
    expression = "${{ pipeline.fetch.status == 'failure' }}"
    judged = ev.Deposited(work_id="w2", pipeline="p", time=1.0, work=Work(pipeline="p", config={"if": expression}),
                          waits=ev.Waits(precursors=["01FETCH"], when="always"))
    assert describe(judged).endswith(f"waiting for 01FETCH to finish (if {expression})")
    ruled = ev.Deposited(work_id="w3", pipeline="p", time=1.0, work=Work(pipeline="p", config={"if": "failure"}),
                         waits=ev.Waits(precursors=["01FETCH"], when="failure"))
    assert describe(ruled).endswith("waiting for 01FETCH to finish (if failure)")
