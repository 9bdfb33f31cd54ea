"""The adversarial half of the promise, against a real nats-server: two writers on one
head, a re-deposit after the duplicate window, and retention ageing events out.

Every write goes straight through ``append`` with an explicit expected sequence (the CAS),
from two separate connections at once (``asyncio.gather``), so nothing in the client's own
bookkeeping can hide a race: only the server decides which write lands.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import nats
import pytest

import workflow
from conftest import eventually, results_answering
from workflow import Work
from workflow.core import events as ev
from workflow.core.errors import ConflictError
from workflow.core.fold import fold
from workflow.log import jsapi
from workflow.log.streams import apply_stream, load_stream_configs

pytestmark = pytest.mark.timeout(60)

#: Works raced at once in each test: every race is run on this many heads side by side.
RACES = 12


def envelope(work_id: str, pipeline: str, by: str) -> dict:
    return {"work_id": work_id, "pipeline": pipeline, "time": time.time(), "by": by}


def started(work_id: str, by: str, queue_seq: int) -> ev.Started:
    return ev.Started(**envelope(work_id, "alpha", by), attempt=1, queue_seq=queue_seq, host=by)


def cancelled(work_id: str, by: str, _queue_seq: int) -> ev.Cancelled:
    return ev.Cancelled(**envelope(work_id, "alpha", by), reason=f"cancelled by {by}")


def succeeded(work_id: str, by: str, _queue_seq: int) -> ev.Succeeded:
    return ev.Succeeded(**envelope(work_id, "alpha", by), attempt=1, results={"by": by})


def failed(work_id: str, by: str, _queue_seq: int) -> ev.Failed:
    return ev.Failed(**envelope(work_id, "alpha", by), attempt=1, reason="error", will_retry=False, error=by)


Make = Callable[[str, str, int], ev.AnyEvent]


@pytest.fixture
async def second_client(nats_url: str):
    """Another writer, on its own connection."""
    async with workflow.connect(nats_url) as other:
        yield other


async def race(first, second, work_id: str, make_first: Make, make_second: Make, expected_seq: int, queue_seq: int):
    """Both writers append against the same head at once; [(who, seq or the error)]."""
    results = await asyncio.gather(
        first.append(make_first(work_id, "writer-1", queue_seq), expected_seq),
        second.append(make_second(work_id, "writer-2", queue_seq), expected_seq),
        return_exceptions=True,
    )
    return list(zip(["writer-1", "writer-2"], results, strict=True))


def exactly_one_landed(outcome) -> str:
    """The writer whose append landed; asserts the other got a ConflictError."""
    landed = [who for who, result in outcome if isinstance(result, int)]
    refused = [result for _, result in outcome if isinstance(result, ConflictError)]
    assert len(landed) == 1 and len(refused) == 1, outcome
    return landed[0]


async def assert_linear(client, work_id: str, expected: list[str], winner: str) -> list:
    """The history is one chain: increasing sequences, each event allowed by the state
    machine after the one before it (a strict fold), the raced event the winner's."""
    records = await client.history_records(work_id)
    assert [type(r.event).__name__ for r in records] == expected
    assert [r.seq for r in records] == sorted({r.seq for r in records})
    fold([r.event for r in records])  # raises FoldError if any event was refused
    assert records[-1].event.by == winner
    return records


async def deposit_and_head(client, count: int = RACES) -> list[tuple[str, int]]:
    ids = await client.deposit([Work(pipeline="alpha") for _ in range(count)])
    heads = await asyncio.gather(*(client.head(work_id) for work_id in ids))
    return [(work_id, head.seq) for work_id, head in zip(ids, heads, strict=True)]


async def test_two_starts_against_the_same_head_land_once_and_the_other_is_refused(client, second_client):
    heads = await deposit_and_head(client)
    outcomes = await asyncio.gather(*(
        race(client, second_client, work_id, started, started, seq, seq) for work_id, seq in heads
    ))
    for (work_id, _), outcome in zip(heads, outcomes, strict=True):
        winner = exactly_one_landed(outcome)
        records = await assert_linear(client, work_id, ["Deposited", "Started"], winner)
        # the winner was told the sequence its start landed at: the recorded one
        assert dict(outcome)[winner] == records[-1].seq
        work = await client.get(work_id)
        assert (work.status, work.attempt) == ("running", 1)


async def test_a_cancel_racing_a_start_lands_or_is_refused_but_never_both(client, second_client):
    heads = await deposit_and_head(client)
    outcomes = await asyncio.gather(*(
        race(client, second_client, work_id, cancelled, started, seq, seq) for work_id, seq in heads
    ))
    for (work_id, _), outcome in zip(heads, outcomes, strict=True):
        winner = exactly_one_landed(outcome)
        kind = "Cancelled" if winner == "writer-1" else "Started"
        await assert_linear(client, work_id, ["Deposited", kind], winner)
        assert (await client.get(work_id)).status == ("cancelled" if kind == "Cancelled" else "running")


@pytest.mark.parametrize(("first", "second"), [(succeeded, succeeded), (succeeded, failed), (failed, cancelled)])
async def test_two_outcomes_of_one_attempt_land_once_and_the_history_stays_linear(
    client, second_client, first, second
):
    heads = await deposit_and_head(client)
    starts = await asyncio.gather(*(client.append(started(w, "worker", seq), seq) for w, seq in heads))
    outcomes = await asyncio.gather(*(
        race(client, second_client, work_id, first, second, start_seq, queue_seq)
        for (work_id, queue_seq), start_seq in zip(heads, starts, strict=True)
    ))
    for (work_id, _), outcome in zip(heads, outcomes, strict=True):
        winner = exactly_one_landed(outcome)
        make = first if winner == "writer-1" else second
        kind = type(make(work_id, winner, 0)).__name__
        await assert_linear(client, work_id, ["Deposited", "Started", kind], winner)


async def test_a_retried_append_of_the_same_event_counts_as_landed_not_as_a_conflict(client, second_client):
    [(work_id, seq)] = await deposit_and_head(client, 1)
    event = started(work_id, "writer-1", seq)
    first, again = await asyncio.gather(client.append(event, seq), second_client.append(event, seq))
    assert first == again
    assert [type(e).__name__ for e in await client.history(work_id)] == ["Deposited", "Started"]


# -- a stream of our own: a short duplicate window, a tiny retention -----------------------


async def apply_workflow_stream(url: str, **changes) -> dict:
    """Create the WORKFLOW stream from streams/WORKFLOW.json with ``changes``; its config."""
    [config] = [c for c in load_stream_configs() if c["name"] == "WORKFLOW"]
    config = {**config, **changes}
    nc = await nats.connect(url)
    try:
        await apply_stream(nc, config)
        return (await jsapi.stream_info(nc))["config"]
    finally:
        await nc.close()


async def until_time(moment: float) -> None:
    """Wait until the monotonic clock passes ``moment`` (a deadline, not a guess)."""
    while time.monotonic() <= moment:
        await asyncio.sleep(min(0.1, max(moment - time.monotonic(), 0.0)) + 0.001)


async def test_a_redeposit_after_the_duplicate_window_still_creates_no_second_work(nats_server):
    window = 1.0
    config = await apply_workflow_stream(nats_server.url, duplicate_window=int(window * 1e9))
    assert config["duplicate_window"] == int(window * 1e9)
    async with workflow.connect(nats_server.url) as client:
        [work_id] = await client.deposit(Work(pipeline="alpha", parameters={"take": 1}))
        deposited_at = time.monotonic()
        assert await client.deposit(Work(id=work_id, pipeline="alpha", parameters={"take": 2})) == [work_id]
        await until_time(deposited_at + window + 0.5)  # the stream no longer remembers the Nats-Msg-Id
        assert await client.deposit(Work(id=work_id, pipeline="alpha", parameters={"take": 3})) == [work_id]
        # What the re-deposit tried, by hand: the CAS (expected sequence 0) refuses it, not
        # the window. The same event id reads as the deposit already landed; another is a conflict.
        [first] = await client.history_records(work_id)
        again = ev.Deposited(id=work_id, **envelope(work_id, "alpha", "late"), work=Work(pipeline="alpha"))
        assert await client.append(again, 0) == first.seq
        other = ev.Deposited(**envelope(work_id, "alpha", "late"), work=Work(pipeline="alpha"))
        with pytest.raises(ConflictError):
            await client.append(other, 0)

        history = await client.history(work_id)
        assert [type(e).__name__ for e in history] == ["Deposited"]
        assert history[0].work.parameters == {"take": 1}
        work = await client.withdraw("alpha", timeout=10)
        assert work is not None and work.id == work_id
        await client.succeed(work, {"ok": True})
        assert await client.withdraw("alpha", timeout=1) is None  # the bucket held one queue message, not three


async def projector_on(url: str, db: Path):
    """Run the projector + results service on ``url`` in this process; its stop event and task."""
    from workflow.results.service import run_projector_service

    stop = asyncio.Event()
    task = asyncio.create_task(run_projector_service(url, db, stop))
    return stop, task


async def test_a_queued_work_whose_events_aged_out_stays_in_the_read_model_and_the_projector_skips_no_live_event(
    nats_server, tmp_path
):
    """The log keeps its last 4 events only (``max_msgs``); the projector had folded the
    first work before its events aged out: its row stays, as the projector saw it, the
    events after the aged-out ones are all projected (no gap), and the audit reports the
    work as stranded (its queue message went with its events)."""
    await apply_workflow_stream(nats_server.url, max_msgs=4)
    stop, task = await projector_on(nats_server.url, tmp_path / "live.duckdb")
    try:
        async with workflow.connect(nats_server.url) as client:
            await eventually(lambda: results_answering(client))
            [old] = await client.deposit(Work(pipeline="alpha"))
            await client.results.get(old, fresh=True)
            newer = await client.deposit([Work(pipeline="alpha") for _ in range(4)])
            assert await client.history_records(old) == []  # gone from the log
            assert (await client.results.get(old, fresh=True)).status == "queued"
            work = await client.withdraw("alpha", timeout=10)
            assert work is not None and work.id in newer  # its queue message went with it
            # The audit names it (and any other work whose queue message the Started pushed
            # out of a 4-message log), and nothing else.
            answer = await client.results.audit()
            assert {a["kind"] for a in answer["anomalies"]} == {"stranded"}, answer
            assert old in {a.get("work_id") for a in answer["anomalies"]}, answer
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_the_audit_reports_a_queued_work_whose_queue_message_aged_out_of_the_log(nats_server, tmp_path):
    await apply_workflow_stream(nats_server.url, max_msgs=4)
    stop, task = await projector_on(nats_server.url, tmp_path / "live.duckdb")
    try:
        async with workflow.connect(nats_server.url) as client:
            await eventually(lambda: results_answering(client))
            [old] = await client.deposit(Work(pipeline="alpha"))
            await client.results.get(old, fresh=True)
            await client.deposit([Work(pipeline="alpha") for _ in range(4)])
            answer = await client.results.audit()
            assert any(found.get("work_id") == old for found in answer["anomalies"]), json.dumps(answer)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_the_audit_reports_events_that_aged_out_before_the_projector_saw_them(nats_server, tmp_path):
    await apply_workflow_stream(nats_server.url, max_msgs=4)
    async with workflow.connect(nats_server.url) as client:
        await client.deposit([Work(pipeline="alpha") for _ in range(6)])  # two age out, unseen
        stop, task = await projector_on(nats_server.url, tmp_path / "live.duckdb")
        try:
            await eventually(lambda: results_answering(client))
            answer = await client.results.audit()
            first_seq = (await jsapi.stream_info(client.nc))["state"]["first_seq"]
            assert first_seq > 1  # the log lost its beginning
            # the audit names exactly what left the log unseen: sequences 1 .. first_seq - 1
            aged = [found for found in answer["anomalies"] if found["kind"] == "aged-out"]
            assert len(aged) == 1, json.dumps(answer)
            assert f"sequences 1..{first_seq - 1} left the log" in aged[0]["detail"], json.dumps(answer)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
