"""The worker archives what its attempt's function returned, per the work's methods, and
the outcome event records each file (name, path, URI, size, sha256): real nats-server,
real files, the worker in this process (thread isolation)."""

from __future__ import annotations

import hashlib
import os

import pytest

from workflow import Work
from workflow.archive.objectstore import ObjectStoreStorage, ensure_bucket
from workflow.archive.storage import Place
from workflow.core import events as ev
from workflow.core.archiving import ArchiveSettings
from workflow.worker.loop import Worker, WorkerConfig

pytestmark = pytest.mark.timeout(90)


def worker(url: str, **options) -> Worker:
    return Worker(WorkerConfig(**{
        "pipelines": ["arch"], "isolation": "thread", "sleep": 1, "connect": {"url": url}, "lives": 1,
        "function": "workflow.examples.with_products", **options,
    }))


def product_work(directory, *, method: str | None = None, size: int = 1024, path=None, **fields) -> Work:
    config = {"archive": {"products": method, "plots": method}} if method else None
    return Work(pipeline="arch", parameters={"name": "cand", "directory": str(directory), "size": size},
                path=str(path or directory), config=config, **fields)


async def outcome(client, work_id: str) -> ev.Succeeded | ev.Failed:
    return [e for e in await client.history(work_id) if isinstance(e, (ev.Succeeded, ev.Failed))][-1]


async def stored_bytes(client, uri: str) -> bytes:
    return b"".join([c async for c in ObjectStoreStorage(client.nc, "PRODUCTS").read(uri)])


async def test_copy_archives_product_and_plot_records_each_and_keeps_the_local_files(client, nats_url, tmp_path):
    [work_id] = await client.deposit(product_work(tmp_path, size=300_000))
    assert await worker(nats_url).run() == 0
    event = await outcome(client, work_id)
    assert isinstance(event, ev.Succeeded)
    product, plot = event.archived
    data = (tmp_path / "cand.dat").read_bytes()  # kept: copy
    assert (product.kind, product.name, product.path, product.method) == ("product", "cand.dat",
                                                                          str(tmp_path / "cand.dat"), "copy")
    assert product.uri == f"obj://PRODUCTS/{work_id}/1/products/cand.dat"
    assert (product.size, product.sha256) == (300_000, hashlib.sha256(data).hexdigest())
    assert plot.uri == f"obj://PRODUCTS/{work_id}/1/plots/cand.png" and plot.storage == "objectstore"
    assert await stored_bytes(client, product.uri) == data
    assert (await stored_bytes(client, plot.uri)).startswith(b"\x89PNG")
    work = await client.get(work_id)
    assert (work.products, work.plots) == ([product.uri], [plot.uri])  # the work's products are the URIs


async def test_move_removes_the_local_files_once_archived(client, nats_url, tmp_path):
    [work_id] = await client.deposit(product_work(tmp_path, method="move"))
    assert await worker(nats_url).run() == 0
    event = await outcome(client, work_id)
    assert isinstance(event, ev.Succeeded) and [a.method for a in event.archived] == ["move", "move"]
    assert not (tmp_path / "cand.dat").exists() and not (tmp_path / "cand.png").exists()
    assert len(await stored_bytes(client, event.archived[0].uri)) == 1024


async def test_delete_removes_the_local_files_and_records_no_uri(client, nats_url, tmp_path):
    [work_id] = await client.deposit(product_work(tmp_path, method="delete"))
    assert await worker(nats_url).run() == 0
    event = await outcome(client, work_id)
    assert [(a.method, a.uri) for a in event.archived] == [("delete", None), ("delete", None)]
    assert not (tmp_path / "cand.dat").exists()
    assert ((await client.get(work_id)).products, (await client.get(work_id)).plots) == ([], [])
    assert await ObjectStoreStorage(client.nc, "PRODUCTS").keys() == []


async def test_bypass_records_the_original_path_and_leaves_the_file(client, nats_url, tmp_path):
    [work_id] = await client.deposit(product_work(tmp_path, method="bypass"))
    assert await worker(nats_url).run() == 0
    assert (await client.get(work_id)).products == [str(tmp_path / "cand.dat")]
    assert (tmp_path / "cand.dat").exists()
    assert await ObjectStoreStorage(client.nc, "PRODUCTS").keys() == []


async def test_a_path_outside_the_work_directory_and_the_allowed_roots_is_refused(client, nats_url, tmp_path):
    inside, outside = tmp_path / "work", tmp_path / "elsewhere"
    inside.mkdir()
    [work_id] = await client.deposit(product_work(outside, path=inside, retries=0))
    assert await worker(nats_url).run() == 0
    event = await outcome(client, work_id)
    assert isinstance(event, ev.Failed) and event.reason == "archive" and not event.will_retry
    assert f"{outside / 'cand.dat'} is outside the work's directory" in event.error
    assert await ObjectStoreStorage(client.nc, "PRODUCTS").keys() == []
    # ... unless the site allows that root
    [allowed] = await client.deposit(product_work(outside, path=inside))
    roots = ArchiveSettings(roots=[str(outside)])
    assert await worker(nats_url, archive=roots).run() == 0
    assert isinstance(await outcome(client, allowed), ev.Succeeded)


async def test_a_symlink_out_of_the_work_directory_is_refused_not_followed(client, nats_url, tmp_path):
    inside, outside = tmp_path / "work", tmp_path / "secret"
    inside.mkdir()
    outside.mkdir()
    (outside / "key.dat").write_bytes(b"not yours")
    os.symlink(outside / "key.dat", inside / "link.dat")
    [work_id] = await client.deposit(Work(pipeline="arch", path=str(inside), retries=0,
                                          parameters={"products": [str(inside / "link.dat")]}))
    assert await worker(nats_url, function="archive_functions.returns").run() == 0
    event = await outcome(client, work_id)
    assert isinstance(event, ev.Failed) and event.reason == "archive"
    assert f"{inside / 'link.dat'} (resolves to {outside / 'key.dat'}) is outside" in event.error
    assert (outside / "key.dat").exists() and await ObjectStoreStorage(client.nc, "PRODUCTS").keys() == []


async def test_a_full_object_store_fails_the_attempt_with_archive_and_the_retry_succeeds_once_space_is_freed(
    client, nats_url, tmp_path,
):
    await ensure_bucket(client.nc, "PRODUCTS", max_bytes=1024 * 1024)
    storage = ObjectStoreStorage(client.nc, "PRODUCTS")
    (tmp_path / "filler").write_bytes(os.urandom(900_000))
    filler = await storage.put(tmp_path / "filler", Place(work_id="other", pipeline="p", attempt=1, kind="product",
                                                          name="filler", created=0.0), limit=None)
    [work_id] = await client.deposit(product_work(tmp_path / "out", size=400_000, retries=2))
    assert await worker(nats_url).run() == 0
    failed = await outcome(client, work_id)
    assert isinstance(failed, ev.Failed) and (failed.reason, failed.will_retry) == ("archive", True)
    assert "the object store PRODUCTS is full" in failed.error and failed.archived is None
    assert await storage.keys(f"{work_id}/") == []  # nothing of the failed attempt stays
    assert (tmp_path / "out" / "cand.dat").exists()  # the retry finds its files
    await storage.delete(filler.uri)
    assert await worker(nats_url).run() == 0
    succeeded = await outcome(client, work_id)
    assert isinstance(succeeded, ev.Succeeded) and succeeded.attempt == 2
    assert succeeded.archived[0].uri == f"obj://PRODUCTS/{work_id}/2/products/cand.dat"


async def test_a_product_over_the_sites_limit_fails_the_attempt_naming_the_limit(client, nats_url, tmp_path):
    [work_id] = await client.deposit(product_work(tmp_path, size=50_000, retries=0))
    assert await worker(nats_url, archive=ArchiveSettings(limits={"objectstore": 10_000})).run() == 0
    event = await outcome(client, work_id)
    assert event.reason == "archive"
    assert "cand.dat is 50,000 bytes, over the objectstore storage's limit of 10,000 bytes" in event.error


async def test_a_method_the_site_does_not_allow_fails_the_attempt(client, nats_url, tmp_path):
    [work_id] = await client.deposit(product_work(tmp_path, method="delete", retries=0))
    assert await worker(nats_url, archive=ArchiveSettings(methods=["copy", "move"])).run() == 0
    event = await outcome(client, work_id)
    assert event.reason == "archive" and "archive method 'delete' for products is not allowed" in event.error
    assert (tmp_path / "cand.dat").exists()


async def test_a_zombie_attempts_late_upload_never_replaces_the_recorded_product(client, nats_url, tmp_path):
    from workflow.archive.archiver import Archiver

    [work_id] = await client.deposit(product_work(tmp_path, size=2000))
    assert await worker(nats_url).run() == 0
    recorded = (await outcome(client, work_id)).archived[0]
    # attempt 0's worker (a zombie: its lease long gone) uploads other bytes, late
    (tmp_path / "cand.dat").write_bytes(b"stale bytes of a zombie")
    archiver = Archiver(ArchiveSettings(), ObjectStoreStorage(client.nc, "PRODUCTS"))
    late = await archiver.archive(await client.get(work_id), 0, [str(tmp_path / "cand.dat")], None)
    assert late[0].uri != recorded.uri
    assert hashlib.sha256(await stored_bytes(client, recorded.uri)).hexdigest() == recorded.sha256
