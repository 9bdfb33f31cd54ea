"""Deleted works: a fact in the log, hidden by the read model, exact in audits and replays."""

from __future__ import annotations

import duckdb
import pytest

import workflow
from conftest import finish
from workflow.core import events as ev
from workflow.core.fold import FoldError, evolve, fold, refusal
from workflow.core.work import Work
from workflow.results import projection
from workflow.results.projector import replay

COMMON = {"work_id": "01JDEL", "pipeline": "alpha"}


def deposited(time: float = 1.0) -> ev.Deposited:
    return ev.Deposited(**COMMON, time=time, work=Work(pipeline="alpha", id="01JDEL"))


def test_a_deleted_is_allowed_only_after_a_finished_status_and_nothing_follows_it():
    # Given each status a work can be in, the state machine allows a Deleted only when it finished
    for status in ("waiting", "queued", "running"):
        assert refusal(status, ev.Deleted) is not None, status
    for status in ("success", "failure", "cancelled"):
        assert refusal(status, ev.Deleted) is None, status
    # and after a Deleted nothing at all, not even a Requeued (retry by hand) or a second Deleted
    for kind in (ev.Requeued, ev.Started, ev.Cancelled, ev.Deleted, ev.Succeeded):
        assert "deleted" in (refusal("deleted", kind) or ""), kind
    cancelled = fold([deposited(), ev.Cancelled(**COMMON, time=2.0, reason="r")])
    deleted = evolve(cancelled, ev.Deleted(**COMMON, time=3.0, reason="cleanup"))
    assert deleted.status == "deleted" and deleted.finished
    assert deleted.stop == cancelled.stop  # it keeps the time it finished; the history says when it was deleted
    with pytest.raises(FoldError):
        evolve(fold([deposited()]), ev.Deleted(**COMMON, time=2.0))
    assert ev.is_final(ev.Deleted(**COMMON, time=3.0))


def row_fold(events: list[ev.AnyEvent]) -> tuple[str | None, list[int]]:
    """The projector's row fold of one work's events: its last status, and the refused positions."""
    row, refused = None, []
    for seq, event in enumerate(events, 1):
        after = projection.apply(row, projection.decode(ev.encode(event)), seq)
        if after is None:
            refused.append(seq)
        else:
            row = after
    return (None if row is None else row.status), refused


def test_the_projectors_row_fold_refuses_and_accepts_deleted_exactly_as_the_fold_does():
    t = iter(range(2, 100))
    started = ev.Started(**COMMON, time=next(t), attempt=1, queue_seq=1)
    histories = [
        [deposited(), ev.Deleted(**COMMON, time=next(t))],  # queued: refused
        [deposited(), started, ev.Deleted(**COMMON, time=next(t))],  # running: refused
        [deposited(), started, ev.Succeeded(**COMMON, time=next(t), attempt=1), ev.Deleted(**COMMON, time=next(t))],
        [deposited(), ev.Cancelled(**COMMON, time=next(t)), ev.Deleted(**COMMON, time=next(t)),
         ev.Requeued(**COMMON, time=next(t), work=Work(pipeline="alpha", id="01JDEL")),  # after: refused
         ev.Deleted(**COMMON, time=next(t))],
    ]
    for events in histories:
        state, refused = None, []
        for seq, event in enumerate(events, 1):
            if refusal(None if state is None else state.status, event) is not None:
                refused.append(seq)
            else:
                state = evolve(state, event)
        assert row_fold(events) == (state.status, refused), events


async def deposit_finished_and_queued(client) -> tuple[list[str], list[str]]:
    """Two finished works (one success, one failure) and two queued ones, in pipeline alpha."""
    ids = await client.deposit([Work(pipeline="alpha", parameters={"i": i}) for i in range(4)])
    await finish(client, ids[0], ok=True)
    await finish(client, ids[1], ok=False)
    return ids[:2], ids[2:]


async def test_deleted_works_are_hidden_from_lists_counts_and_pipelines_unless_asked(client, results_service):
    # Given four works, two of them deleted (one finished, one queued: cancelled first)
    finished, queued = await deposit_finished_and_queued(client)
    await client.delete(finished[0], reason="cleanup")
    await client.delete(queued[0])
    results = client.results
    # Then lists, counts and the pipelines' counts leave them out
    listed = {w.id for w in await results.query(pipeline="alpha", fresh=True)}
    assert listed == {finished[1], queued[1]}
    assert await results.count(pipeline="alpha") == 2
    assert (await results.pipelines())["alpha"] == {
        "total": 2, "waiting": 0, "queued": 1, "running": 0, "success": 0, "failure": 1, "cancelled": 0}
    # unless asked: include_deleted, or a status filter that names deleted
    everything = {w.id: w.status for w in await results.query(pipeline="alpha", include_deleted=True)}
    assert everything == {finished[0]: "deleted", finished[1]: "failure", queued[0]: "deleted", queued[1]: "queued"}
    assert await results.count(include_deleted=True) == 4
    assert await results.count(status="deleted") == 2
    # and one work asked for by id is always found, saying it is deleted
    assert (await results.get(finished[0])).status == "deleted"
    assert (await client.get(finished[0])).status == "deleted"
    history = [type(r.event).__name__ for r in await results.history(queued[0])]
    assert history == ["Deposited", "Cancelled", "Deleted"]


async def test_after_deletes_the_audit_is_clean_and_a_fresh_replay_equals_the_live_projection(
    client, results_service, tmp_path
):
    finished, queued = await deposit_finished_and_queued(client)
    await client.delete(finished[0])
    await client.delete(queued[0])
    await client.delete_many(pipeline="alpha", status="failure")
    answer = await client.results.audit()
    assert answer["total"] == 0, answer
    live_position = await client.results.position()
    replayed = tmp_path / "replayed.duckdb"
    assert await replay(client.nc, replayed) == live_position

    def works(path) -> list[tuple]:
        con = duckdb.connect(str(path), read_only=True)
        try:
            return con.execute("SELECT * FROM works ORDER BY id").fetchall()
        finally:
            con.close()

    exported = tmp_path / "live-export"
    await client.results.export(exported)
    con = duckdb.connect(":memory:")
    live = con.execute(f"SELECT * FROM read_parquet('{exported}/works.parquet') ORDER BY id").fetchall()
    assert live == works(replayed)
    assert sorted(row[0] for row in live if "deleted" in row) == sorted([finished[0], queued[0], finished[1]])


async def test_work_delete_of_the_seed_deletes_the_work_and_a_second_delete_is_refused(client):
    [work_id] = await client.deposit(Work(pipeline="alpha"))
    work = await client.get(work_id)
    assert await work.delete() is True
    assert [type(e).__name__ for e in await client.history(work_id)] == ["Deposited", "Cancelled", "Deleted"]
    with pytest.raises(workflow.errors.ConflictError, match="already deleted"):
        await work.delete()
    with pytest.raises(workflow.errors.ConflictError, match="already deleted"):
        await client.requeue(work_id)
