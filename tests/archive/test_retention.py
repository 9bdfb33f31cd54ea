"""Retention and audit of the archive: `workflow delete ID --products` removes every
attempt's files and records which; `workflow audit --products` finds orphans, missing
files and altered ones (exit 1), and is clean otherwise."""

from __future__ import annotations

import asyncio
import json

import pytest
from test_fetch import archived_work, workflow_cli
from test_worker_archive import outcome

from workflow.archive.objectstore import ObjectStoreStorage
from workflow.core import events as ev
from workflow.core.errors import WorkflowError

pytestmark = pytest.mark.timeout(90)


async def test_delete_with_products_removes_every_attempts_files_and_records_them(client, nats_url, tmp_path):
    work_id = await archived_work(client, nats_url, tmp_path / "w")
    recorded = [f.uri for f in (await outcome(client, work_id)).archived]
    store = await client.nc.jetstream().object_store("PRODUCTS")
    await store.put(f"{work_id}/7/products/leftover.dat", b"a zombie attempt's upload")
    deleted = await asyncio.to_thread(workflow_cli, "delete", work_id, "--products", url=nats_url, cwd=tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted {work_id}, 3 archived files removed" in deleted.stdout
    [event] = [e for e in await client.history(work_id) if isinstance(e, ev.Deleted)]
    assert sorted(event.products_removed) == sorted([*recorded, f"obj://PRODUCTS/{work_id}/7/products/leftover.dat"])
    assert await ObjectStoreStorage(client.nc, "PRODUCTS").keys() == []
    assert [f.uri for f in await client.products.list(work_id)] == [None, None]  # the history stays, the files not
    with pytest.raises(WorkflowError, match="removed since"):
        await client.products.download(work_id, tmp_path / "got")
    refused = await asyncio.to_thread(workflow_cli, "delete", "--pipeline", "arch", "--products", url=nats_url,
                                      cwd=tmp_path)
    assert refused.returncode == 2 and "--products takes work ids" in refused.stderr


async def test_audit_products_reports_orphans_missing_and_altered_files_and_is_clean_otherwise(
    client, nats_url, tmp_path,
):
    first = await archived_work(client, nats_url, tmp_path / "a")
    clean = await asyncio.to_thread(workflow_cli, "audit", "--products", url=nats_url, cwd=tmp_path)
    assert clean.returncode == 0 and "clean: 2 archived files match the log" in clean.stdout
    product, plot = (await outcome(client, first)).archived
    store = await client.nc.jetstream().object_store("PRODUCTS")
    await store.put(product.uri.removeprefix("obj://PRODUCTS/"), b"altered")
    await store.delete(plot.uri.removeprefix("obj://PRODUCTS/"))
    await store.put("NOBODY/1/products/x.dat", b"no event records me")
    found = await asyncio.to_thread(workflow_cli, "audit", "--products", "--json", url=nats_url, cwd=tmp_path)
    assert found.returncode == 1
    kinds = {(a["kind"], a["uri"]) for a in json.loads(found.stdout)["anomalies"]}
    assert kinds == {("checksum", product.uri), ("missing", plot.uri), ("orphan", "obj://PRODUCTS/NOBODY/1/products/x.dat")}
