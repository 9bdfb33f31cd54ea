"""The system on a real three-node JetStream cluster (``deploy/cluster``): the stream at R3,
two ``workflow run`` workers and ``workflow server --nats <list> --replicas 3``, and the
stream leader SIGKILLed mid-run and restarted. Every work succeeds exactly once, the read
model equals the log's fold, and every client reconnects by itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from deployed import (
    DEPLOY,
    Node,
    assert_each_succeeded_once_and_read_model_equals_fold,
    end,
    env_for,
    js_api,
    log_tails,
    relocate,
    until,
    workflow_process,
)

import workflow
from workflow import Work
from workflow.core.errors import WorkflowError

pytestmark = pytest.mark.timeout(120)

WORKS = 60


@pytest.fixture
def cluster(tmp_path: Path):
    """The three nodes of deploy/cluster on free ports, JetStream ready; stopped at the end."""
    shipped = {path.name: path.read_text() for path in sorted((DEPLOY / "cluster").glob("n*.conf"))}
    nodes = []
    for name, text in relocate(shipped, tmp_path).items():
        (tmp_path / name).write_text(text)
        nodes.append(Node(tmp_path / name, tmp_path / f"{Path(name).stem}.log"))
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def test_a_comma_separated_url_is_split_into_the_servers_of_a_cluster(monkeypatch):
    from workflow.core.settings import nats_servers

    assert nats_servers("nats://a:4222, nats://b:4222,") == ["nats://a:4222", "nats://b:4222"]
    monkeypatch.setenv("WORKFLOW_NATS_URL", "nats://a:1,nats://b:2")
    assert nats_servers() == ["nats://a:1", "nats://b:2"]


def servers(nodes: list[Node]) -> str:
    return ",".join(node.url for node in nodes)


async def stream_leader(url: str) -> str | None:
    info = await js_api(url, "STREAM.INFO.WORKFLOW")
    return info.get("cluster", {}).get("leader") if "error" not in info else None


async def count_succeeded(client, pipeline: str) -> int:
    try:
        return int(await client.results.count(pipeline=pipeline, status="success"))
    except WorkflowError:
        return -1  # the results service is between connections


async def test_the_stream_leader_sigkilled_mid_run_loses_no_work_and_records_none_twice(cluster, tmp_path):
    url = servers(cluster)
    await until(lambda: _ready(url), timeout=30)  # a JetStream meta leader is elected
    server = workflow_process(["server", "--nats", url, "--replicas", "3", "--data-dir", str(tmp_path / "server")],
                              env_for(url), tmp_path / "server.log", tmp_path)
    workers = []
    try:
        await until(lambda: "workflow server ready" in (tmp_path / "server.log").read_text(), timeout=30)
        info = await js_api(url, "STREAM.INFO.WORKFLOW")
        assert info["config"]["num_replicas"] == 3 and len(info["cluster"]["replicas"]) == 2
        async with workflow.connect(url) as client:
            ids = await client.deposit([
                Work(pipeline="cluster", function="worker_functions.slow", parameters={"seconds": 0.2})
                for _ in range(WORKS)
            ])
            workers = [workflow_process(["run", "cluster", "--sleep", "1", "--concurrency", "2"], env_for(url),
                                        tmp_path / f"worker-{i}.log", tmp_path) for i in range(2)]
            logs = [tmp_path / "server.log", *(tmp_path / f"worker-{i}.log" for i in range(2))]
            await until(lambda: _at_least(client, WORKS // 4), timeout=40, explain=lambda: log_tails(logs))
            figures = await _kill_and_restart_the_leader(cluster, url, client)
            await until(lambda: _at_least(client, WORKS), timeout=60, explain=lambda: log_tails(logs))
            figures["restarted_attempts"] = await assert_each_succeeded_once_and_read_model_equals_fold(client, ids)
            figures["works"] = WORKS
            print("failover:", figures)
        for process in (server, *workers):
            assert process.poll() is None, "a client gave up instead of reconnecting"
    finally:
        for process in (*workers, server):
            end(process)


async def _ready(url: str) -> bool:
    return "error" not in await js_api(url, "INFO")


async def _at_least(client, count: int) -> bool:
    return await count_succeeded(client, "cluster") >= count


async def _kill_and_restart_the_leader(nodes: list[Node], url: str, client) -> dict[str, float | str]:
    """SIGKILL the node that leads the stream; the time until another node leads it and
    until works succeed again; then restart the killed node and wait for it to catch up."""
    leader = await until(lambda: stream_leader(url), timeout=10)
    victim = next(node for node in nodes if node.name == leader)
    before = await count_succeeded(client, "cluster")
    killed_at = time.monotonic()
    victim.kill()
    others = ",".join(node.url for node in nodes if node is not victim)
    new_leader = await until(lambda: _other_leader(others, leader), timeout=30)
    elected = time.monotonic() - killed_at
    await until(lambda: _at_least(client, before + 1), timeout=30)
    progressing = time.monotonic() - killed_at
    victim.start()
    await until(lambda: _replicas_current(url), timeout=30)
    return {"killed": leader, "new_leader": new_leader, "succeeded_before_kill": before,
            "leader_elected_s": round(elected, 2), "works_succeeding_again_s": round(progressing, 2)}


async def _other_leader(url: str, old: str) -> str | None:
    leader = await stream_leader(url)
    return leader if leader and leader != old else None


async def _replicas_current(url: str) -> bool:
    info = await js_api(url, "STREAM.INFO.WORKFLOW")
    replicas = info.get("cluster", {}).get("replicas", [])
    return len(replicas) == 2 and all(r.get("current") for r in replicas)
