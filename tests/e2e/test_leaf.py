"""A telescope site as a leaf node (``deploy/site``): the site's worker connects to its local
leaf, which has no JetStream and reaches the hub's log through the link. The leaf is
stopped mid-run (the site is cut off) and started again: the work completes, nothing is
lost, nothing is recorded twice, and the worker reconnects by itself."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from deployed import (
    DEPLOY,
    Node,
    assert_each_succeeded_once_and_read_model_equals_fold,
    end,
    env_for,
    js_api,
    relocate,
    until,
    workflow_process,
)

import workflow
from workflow import Work
from workflow.core.errors import WorkflowError

pytestmark = pytest.mark.timeout(120)

WORKS = 30
#: How long the site stays cut off: longer than a lease, so the works it held are handed out
#: again by the hub, and the worker's late outcomes meet the per-work CAS.
OUTAGE = 3 * float(os.environ.get("WORKFLOW_LEASE_SECONDS", "1.5"))


@pytest.fixture
def hub_and_leaf(tmp_path: Path):
    shipped = {name: (DEPLOY / "site" / name).read_text() for name in ("hub.conf", "leaf.conf")}
    nodes = []
    for name, text in relocate(shipped, tmp_path).items():
        (tmp_path / name).write_text(text)
        nodes.append(Node(tmp_path / name, tmp_path / f"{Path(name).stem}.log"))
    try:
        yield tuple(node.start() for node in nodes)
    finally:
        for node in nodes:
            node.kill()


async def succeeded(client) -> int:
    try:
        # fresh: everything the hub has logged so far, not what the projection held a moment ago
        return int(await client.results.count(pipeline="site", status="success", fresh=True))
    except WorkflowError:
        return -1


async def test_a_site_cut_off_mid_run_completes_its_work_with_nothing_lost_or_recorded_twice(hub_and_leaf, tmp_path):
    hub, leaf = hub_and_leaf
    server = workflow_process(["server", "--nats", hub.url, "--data-dir", str(tmp_path / "server")],
                              env_for(hub.url), tmp_path / "server.log", tmp_path)
    worker = None
    try:
        await until(lambda: "workflow server ready" in (tmp_path / "server.log").read_text(), timeout=30)
        # The leaf keeps no stream: JetStream answers through it come from the hub.
        await until(lambda: _answers_from_hub(leaf.url), timeout=20)
        async with workflow.connect(hub.url) as client:
            ids = await client.deposit([
                Work(pipeline="site", site="chime", function="worker_functions.slow", parameters={"seconds": 0.2})
                for _ in range(WORKS)
            ])
            worker = workflow_process(["run", "site", "--site", "chime", "--sleep", "1", "--concurrency", "2"],
                                      env_for(leaf.url), tmp_path / "worker.log", tmp_path)
            await until(lambda: _at_least(client, WORKS // 4), timeout=40)
            leaf.stop()  # the site is cut off: its worker loses NATS, the hub keeps the log
            cut_at = await succeeded(client)
            await asyncio.sleep(OUTAGE)  # the cut's length (a scenario parameter, not a wait for a state)
            assert await succeeded(client) == cut_at, "nothing can finish while the only worker is cut off"
            leaf.start()
            await until(lambda: _at_least(client, WORKS), timeout=60)
            restarted = await assert_each_succeeded_once_and_read_model_equals_fold(client, ids)
            print(f"site cut off for {OUTAGE}s after {cut_at}/{WORKS} works; {restarted} attempt(s) started again")
        assert worker.poll() is None, "the worker gave up instead of reconnecting"
    finally:
        for process in (worker, server):
            if process is not None:
                end(process)


async def _answers_from_hub(url: str) -> bool:
    info = await js_api(url, "STREAM.INFO.WORKFLOW")
    return "error" not in info and info.get("cluster", {}).get("leader") in (None, "hub")


async def _at_least(client, count: int) -> bool:
    return await succeeded(client) >= count


async def test_a_leaf_site_worker_archives_products_through_the_hub_and_the_hub_fetches_them(
    hub_and_leaf, tmp_path,
):
    hub, leaf = hub_and_leaf
    server = workflow_process(["server", "--nats", hub.url, "--data-dir", str(tmp_path / "server")],
                              env_for(hub.url), tmp_path / "server.log", tmp_path)
    worker = None
    try:
        await until(lambda: "workflow server ready" in (tmp_path / "server.log").read_text(), timeout=30)
        await until(lambda: _answers_from_hub(leaf.url), timeout=20)
        site_dir = tmp_path / "site-disk"
        async with workflow.connect(hub.url) as client:
            [work_id] = await client.deposit(Work(
                pipeline="site", site="chime", path=str(site_dir),
                parameters={"name": "cand", "directory": str(site_dir), "size": 700_000}))
            site_dir.mkdir()
            worker = workflow_process(["run", "site", "--site", "chime", "--lives", "1", "--sleep", "1",
                                       "--function", "workflow.examples.with_products"],
                                      env_for(leaf.url), tmp_path / "worker.log", tmp_path)
            await until(lambda: _status_is(client, work_id, "success"), timeout=60)
            [product, _] = await client.products.list(work_id)
            assert product.uri.startswith("obj://PRODUCTS/") and product.size == 700_000
            [fetched] = await client.products.download(work_id, tmp_path / "at-hub", ["cand.dat"])
            assert fetched.read_bytes() == (site_dir / "cand.dat").read_bytes()
    finally:
        for process in (worker, server):
            if process is not None:
                end(process)


async def _status_is(client, work_id: str, status: str) -> bool:
    return (await client.get(work_id)).status == status
