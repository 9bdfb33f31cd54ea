"""Prometheus metrics: the server's counts agree with the read model, the lag falls to
zero, buckets show their depth, and a worker's histogram counts its attempts. Real
nats-server, real projector, real HTTP scrapes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from conftest import eventually
from workflow import Work
from workflow.results import metrics as server_metrics
from workflow.worker import metrics as worker_metrics

PIPELINE = "metered"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` on ``port`` as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@contextlib.asynccontextmanager
async def metrics_server(nats_url: str):
    """``run_metrics`` in this process on a free port; yields the port."""
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        server_metrics.run_metrics(nats_url, 0, stop, host="127.0.0.1", on_ready=ready.set_result)
    )
    port = await asyncio.wait_for(asyncio.shield(ready), 10)
    try:
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def settle(client, port: int) -> dict:
    """Scrape until the counts agree with ``client.results.pipelines(fresh=True)`` and the
    projector's lag is zero; returns that scrape."""

    async def agreeing():
        counts = (await client.results.pipelines(fresh=True))[PIPELINE]
        samples = await asyncio.to_thread(scrape, port)
        works = {
            "total": value(samples, "workflow_works_total", pipeline=PIPELINE, event="deposited", reason=""),
            "success": value(samples, "workflow_works_total", pipeline=PIPELINE, event="succeeded", reason=""),
            "failure": value(samples, "workflow_works_total", pipeline=PIPELINE, event="failed", reason="error"),
            "cancelled": value(samples, "workflow_works_total", pipeline=PIPELINE, event="cancelled", reason=""),
        }
        held = {status: value(samples, "workflow_pipeline_works", pipeline=PIPELINE, status=status)
                for status in ("queued", "running", "success", "failure", "cancelled")}
        lag = samples.get(("workflow_projector_lag_events", ()))
        agree = all(works[k] == counts[k] for k in works) and all(held[k] == counts[k] for k in held)
        return samples if agree and lag == 0 else None

    return await eventually(agreeing, timeout=20)


async def deposit_and_finish(client, succeed: int, fail: int, cancel: int) -> None:
    ids = await client.deposit([Work(pipeline=PIPELINE, parameters={"i": i}) for i in range(succeed + fail + cancel)])
    for work_id in ids[:cancel]:
        await client.cancel(work_id)
    for n in range(succeed + fail):
        work = await client.withdraw(PIPELINE, timeout=5)
        assert work is not None
        if n < succeed:
            await client.succeed(work, {"n": n})
        else:
            await client.fail(work, "error", "boom", retry=False)


async def test_the_server_metrics_count_what_the_results_service_counts(nats_url, client, results_service):
    async with metrics_server(nats_url) as port:
        await deposit_and_finish(client, succeed=4, fail=2, cancel=1)
        samples = await settle(client, port)
    assert value(samples, "workflow_works_total", pipeline=PIPELINE, event="deposited", reason="") == 7
    assert value(samples, "workflow_works_total", pipeline=PIPELINE, event="started", reason="") == 6
    assert value(samples, "workflow_works_total", pipeline=PIPELINE, event="succeeded", reason="") == 4
    assert value(samples, "workflow_works_total", pipeline=PIPELINE, event="failed", reason="error") == 2
    assert value(samples, "workflow_metrics_source_up", source="results") == 1
    assert not any("work_id" in dict(labels) for _name, labels in samples)


async def test_a_restarted_metrics_server_counts_the_log_again_from_the_start(nats_url, client, results_service):
    async with metrics_server(nats_url) as port:
        await deposit_and_finish(client, succeed=3, fail=0, cancel=0)
        before = await settle(client, port)
    async with metrics_server(nats_url) as port:
        after = await settle(client, port)
    for event in ("deposited", "started", "succeeded"):
        sample = ("workflow_works_total", (("event", event), ("pipeline", PIPELINE), ("reason", "")))
        assert after[sample] == before[sample] == 3


async def test_the_projector_lag_is_the_log_head_minus_its_checkpoint(nats_url, client, results_service):
    async with metrics_server(nats_url) as port:
        await deposit_and_finish(client, succeed=2, fail=0, cancel=0)
        samples = await settle(client, port)
    head = samples[("workflow_log_last_sequence", ())]
    assert samples[("workflow_projector_position", ())] == head
    assert samples[("workflow_projector_lag_events", ())] == 0


async def test_buckets_show_their_waiting_and_held_works_per_pipeline_site_and_priority(nats_url, client):
    await client.deposit([Work(pipeline=PIPELINE, priority=5, site="kko") for _ in range(3)])
    await client.withdraw(PIPELINE, site="kko", timeout=5)
    async with metrics_server(nats_url) as port:
        samples = await asyncio.to_thread(scrape, port)
    labels = {"pipeline": PIPELINE, "site": "kko", "priority": "5"}
    assert value(samples, "workflow_bucket_undelivered", **labels) == 2
    assert value(samples, "workflow_bucket_held", **labels) == 1
    # no results service runs in this test: the scrape says so instead of failing
    assert value(samples, "workflow_metrics_source_up", source="results") == 0
    assert value(samples, "workflow_metrics_source_up", source="buckets") == 1


async def test_each_results_request_is_timed_by_endpoint_and_outcome():
    async def answer(data: bytes) -> bytes:
        return data

    async def refuse(data: bytes) -> bytes:
        raise ValueError("no")

    registry = CollectorRegistry()
    registry.register(server_metrics.REQUEST_SECONDS)

    def count(outcome: str) -> float:
        labels = {"endpoint": "test", "outcome": outcome}
        return registry.get_sample_value("workflow_results_request_seconds_count", labels) or 0.0

    ok, errors = count("ok"), count("error")
    assert await server_metrics.timed("test", answer)(b"x") == b"x"
    with pytest.raises(ValueError):
        await server_metrics.timed("test", refuse)(b"x")
    assert (count("ok"), count("error")) == (ok + 1, errors + 1)


def test_event_counts_keep_label_values_bounded():
    counts = server_metrics.EventCounts()
    counts.add("wf.p.01ID.queued.local.3", b'{"type":"deposited"}', 1)
    counts.add("wf.p.01ID.failed", b'{"type":"failed","reason":"made-up"}', 2)
    counts.add("wf.p.01ID.exploded", b"{}", 3)  # not an event: ignored
    counts.add("wf.p.01ID.queued.local.3", b"not json", 4)  # unreadable: ignored
    counts.add("other.subject", b"{}", 5)
    for n in range(server_metrics.MAX_PIPELINES + 5):
        counts.add(f"wf.p{n}.01ID.started", b"{}", 6 + n)
    snapshot = counts.snapshot()
    assert snapshot[("p", "deposited", "")] == 1
    assert snapshot[("p", "failed", "other")] == 1
    assert snapshot[(server_metrics.OTHER, "started", "")] == 6  # p0..p998 by name (p is the 1000th), the rest pooled
    assert len({pipeline for pipeline, _, _ in snapshot}) == server_metrics.MAX_PIPELINES + 1


def test_worker_outcomes_become_a_few_fixed_label_values():
    assert worker_metrics.outcome_label("failed, will retry") == "retrying"
    assert worker_metrics.outcome_label("given back") == "given_back"
    assert worker_metrics.outcome_label("something new") == "other"




def worker_env(url: str) -> dict[str, str]:
    return {**os.environ, "WORKFLOW_NATS_URL": url}


async def json_log_field(process: subprocess.Popen[bytes], field: str, timeout: float = 20) -> object:
    """The first value of ``field`` in the process's JSON log lines on stderr."""
    deadline = time.monotonic() + timeout
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), deadline - time.monotonic())
        if not line:
            break
        entry = json.loads(line)
        if field in entry:
            return entry[field]
    raise AssertionError(f"no log line with {field!r}")


async def test_a_worker_histogram_counts_every_attempt_it_ran(nats_url, client, tmp_path: Path):
    works = 5
    process = subprocess.Popen(
        [sys.executable, "-m", "workflow.cli", "run", PIPELINE, "--function", "workflow.examples.add",
         "--isolation", "thread", "--concurrency", "2", "--sleep", "1",
         "--metrics-port", "0", "--metrics-host", "127.0.0.1", "--log-format", "json"],
        env=worker_env(nats_url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    try:
        port = await json_log_field(process, "metrics_port")
        assert isinstance(port, int)
        await client.deposit([Work(pipeline=PIPELINE, parameters={"a": i, "b": 1}) for i in range(works)])

        async def attempts():
            samples = await asyncio.to_thread(scrape, port)
            count = value(samples, "workflow_attempt_seconds_count", pipeline=PIPELINE, outcome="success")
            return samples if count == works else None

        samples = await eventually(attempts, timeout=30)
        assert value(samples, "workflow_worker_slots", state="busy") + value(
            samples, "workflow_worker_slots", state="free") == 2
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 20)


async def test_the_results_service_latency_histogram_counts_the_requests_it_answered(nats_url, client, results_service):
    async with metrics_server(nats_url) as port:
        await deposit_and_finish(client, succeed=1, fail=0, cancel=0)
        before = value(await asyncio.to_thread(scrape, port), "workflow_results_request_seconds_count",
                       endpoint="pipelines", outcome="ok")
        for _ in range(3):
            await client.results.pipelines(fresh=True)
        samples = await asyncio.to_thread(scrape, port)
    # the scrapes ask the service too (one pipelines request each): at least the three asked here
    assert value(samples, "workflow_results_request_seconds_count", endpoint="pipelines", outcome="ok") >= before + 3
