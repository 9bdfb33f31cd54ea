"""Bulk actions from Python: selected in the read model, each work its own CAS'd event."""

from __future__ import annotations

import pytest

from conftest import finish
from workflow.core import events as ev
from workflow.core.bulk import BulkReport, steps
from workflow.core.errors import ValidationError
from workflow.core.work import Work
from workflow.results import selection


def test_each_action_appends_the_steps_its_status_allows():
    assert steps("cancel", "queued") == ("cancelled",) and steps("cancel", "running") == ("cancelled",)
    assert steps("cancel", "success") == "already finished (success)"
    assert steps("requeue", "failure") == ("requeued",) and steps("requeue", "running") == "running; cancel it first"
    assert steps("delete", "cancelled") == ("deleted",) and steps("delete", "waiting") == ("cancelled", "deleted")
    for action in ("cancel", "requeue", "delete"):
        assert steps(action, "deleted") == "already deleted"


def test_the_report_says_how_many_were_touched_and_why_the_others_were_not():
    report = BulkReport("cancel", done=["a", "b"], changed=["c"], refused={"d": "already finished (success)"},
                        missing=["e"])
    assert report.summary() == "cancelled 2, skipped 1 (changed meanwhile), refused 1 (already finished), not found 1"
    assert report.matched == 5 and report.as_dict()["cancelled"] == 2


async def test_cancel_many_by_filter_cancels_every_matching_work_and_nothing_else(client, results_service):
    tagged = await client.deposit([Work(pipeline="alpha", tags=["night-42"]) for _ in range(5)])
    others = await client.deposit([Work(pipeline="alpha") for _ in range(3)])
    elsewhere = await client.deposit([Work(pipeline="beta", tags=["night-42"]) for _ in range(2)])
    report = await client.cancel_many(pipeline="alpha", tags="night-42", reason="bad night")
    assert sorted(report.done) == sorted(tagged) and report.summary() == "cancelled 5"
    for work_id in tagged:
        head = (await client.head(work_id)).event
        assert isinstance(head, ev.Cancelled) and head.reason == "bad night"
    for work_id in others + elsewhere:
        assert (await client.get(work_id)).status == "queued"


async def test_a_work_that_changed_after_it_was_seen_is_skipped_and_counted_not_cancelled(client, results_service):
    ids = await client.deposit([Work(pipeline="alpha") for _ in range(4)])
    seen = await client.select(pipeline="alpha", status="queued")
    assert [s.work_id for s in seen] == sorted(ids)
    # a worker starts one between the selection and the cancel
    started = await client.withdraw("alpha", timeout=10)
    report = await client.bulk.apply("cancel", seen)
    assert report.changed == [started.id]
    assert sorted(report.done) == sorted(set(ids) - {started.id})
    assert [type(e).__name__ for e in await client.history(started.id)] == ["Deposited", "Started"]


async def test_apply_reports_its_progress_once_per_work_through(client, results_service):
    ids = await client.deposit([Work(pipeline="alpha") for _ in range(5)])
    await client.cancel(ids[0])
    seen = await client.select(pipeline="alpha")  # one of them already cancelled: refused, yet through
    through: list[int] = []
    report = await client.bulk.apply("cancel", seen, progress=through.append)
    assert report.summary() == "cancelled 4, refused 1 (already finished)"
    assert through == [1, 2, 3, 4, 5]


async def test_requeue_many_retries_the_failed_works_at_a_new_priority(client, results_service):
    ids = await client.deposit([Work(pipeline="alpha") for _ in range(3)])
    await finish(client, ids[0], ok=False)
    await finish(client, ids[1], ok=False)
    failed = {w.id for w in await client.results.query(pipeline="alpha", status="failure", fresh=True)}
    report = await client.requeue_many(pipeline="alpha", status="failure", priority=5, reason="fixed the disk")
    assert set(report.done) == failed and len(failed) == 2
    for work_id in failed:
        work = await client.get(work_id)
        assert (work.status, work.priority, work.results) == ("queued", 5, None)
    again = await client.withdraw("alpha", priority=5, timeout=10)
    assert again is not None and again.id in failed


async def test_by_ids_counts_the_unknown_and_the_refused_apart(client, results_service):
    ids = await client.deposit([Work(pipeline="alpha") for _ in range(3)])
    done = await finish(client, ids[0], ok=True)
    report = await client.cancel_many([*ids, "01NOSUCHWORK00000000000000", ids[1]])
    assert report.refused == {done.id: "already finished (success)"}
    assert report.missing == ["01NOSUCHWORK00000000000000"]
    assert sorted(report.done) == sorted(ids[1:])  # a repeated id counts once


async def test_a_selection_needs_ids_or_filters_naming_a_pipeline(client):
    with pytest.raises(ValidationError, match="name the works"):
        await client.cancel_many()
    with pytest.raises(ValidationError, match="not both"):
        await client.cancel_many(["01J"], pipeline="alpha")
    with pytest.raises(ValidationError, match="pipeline"):
        await client.delete_many(status="failure")


async def test_selection_pages_by_id_and_lists_each_work_once(client, results_service, monkeypatch):
    monkeypatch.setattr(selection, "PAGE", 3)
    ids = await client.deposit([Work(pipeline="alpha") for _ in range(8)])
    seen = await client.select(pipeline="alpha")
    assert [s.work_id for s in seen] == sorted(ids)
    report = await client.delete_many(pipeline="alpha")
    assert sorted(report.done) == sorted(ids)
    assert await client.results.count(pipeline="alpha", fresh=True) == 0


async def test_a_cancel_the_log_refused_does_not_stop_a_work_held_by_a_worker(client, nats_url):
    import workflow
    from workflow.core.errors import ConflictError

    [work_id] = await client.deposit(Work(pipeline="alpha"))
    seen = (await client.head(work_id)).seq
    held = await client.withdraw("alpha", timeout=10)  # this client holds it, listening to the pipeline's cancels
    async with workflow.connect(nats_url) as operator:  # an operator who saw the work queued, before the start
        late = ev.Cancelled(**operator.bulk._log.envelope(work_id, "alpha"))
        with pytest.raises(ConflictError):
            await operator.append(late, seen)
    await client.succeed(held, {"ok": True})  # refused if the refused cancel stopped the work here
    assert (await client.get(work_id)).status == "success"
