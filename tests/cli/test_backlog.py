"""The backlog's figures are true (issue 19 #10): works cancelled while queued leave their
messages in the bucket until a worker drops them, so ``workflow_bucket_waiting`` and
``workflow buckets``' waiting (what can run) count only queued works, and the messages
are counted apart (``undelivered``). Real nats-server, projector, scrapes and CLI."""

from __future__ import annotations

import asyncio
import json

from test_results_cli import cli

from conftest import eventually
from test_metrics import metrics_server, scrape, value
from workflow import Work

PIPELINE = "backlog"
LABELS = {"pipeline": PIPELINE, "site": "local", "priority": "3"}


async def test_works_cancelled_while_queued_are_not_counted_as_waiting(nats_url, client, results_service):
    # Given 10 works cancelled while queued, and 3 still queued, in one bucket
    cancelled = await client.deposit([Work(pipeline=PIPELINE) for _ in range(10)])
    for work_id in cancelled:
        await client.cancel(work_id)
    await client.deposit([Work(pipeline=PIPELINE) for _ in range(3)])
    await client.results.count(fresh=True)
    async with metrics_server(nats_url) as port:
        # When Prometheus scrapes, Then waiting is the 3 that can run, and the 13 messages are undelivered
        async def settled():
            samples = await asyncio.to_thread(scrape, port)
            queued = value(samples, "workflow_pipeline_works", pipeline=PIPELINE, status="queued")
            return samples if queued == 3 else None

        samples = await eventually(settled, timeout=20)
    assert value(samples, "workflow_bucket_waiting", **LABELS) == 3
    assert value(samples, "workflow_bucket_undelivered", **LABELS) == 13
    assert value(samples, "workflow_bucket_held", **LABELS) == 0
    # and `workflow buckets` says the same
    code, out, err = await cli("buckets", "--json", "--nats", nats_url)
    assert code == 0, err
    [bucket] = [b for b in json.loads(out) if b["pipeline"] == PIPELINE]
    assert (bucket["waiting"], bucket["undelivered"], bucket["held"]) == (3, 13, 0)
    code, out, err = await cli("buckets", "--nats", nats_url)
    assert code == 0 and "undelivered" in out, err
    # and once a worker has taken the three, nothing waits though no message is left to drop either
    for _ in range(3):
        work = await client.withdraw(PIPELINE, timeout=5)
        assert work is not None and work.id not in cancelled
        await client.succeed(work, {})
    await client.results.count(fresh=True)
    [after] = [b for b in await client.buckets() if b.pipeline == PIPELINE]
    assert (after.waiting, after.undelivered, after.held) == (0, 0, 0)


async def test_without_a_results_service_buckets_say_waiting_is_unknown_not_zero(nats_url, client):
    [work_id] = await client.deposit(Work(pipeline=PIPELINE))
    await client.cancel(work_id)
    [bucket] = [b for b in await client.buckets() if b.pipeline == PIPELINE]
    assert (bucket.waiting, bucket.undelivered) == (None, 1)
    code, out, err = await cli("buckets", "--nats", nats_url)
    assert code == 0 and "?" in out and "no results service answers" in err, (out, err)
