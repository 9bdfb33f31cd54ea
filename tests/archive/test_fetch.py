"""Fetching products from anywhere: another client, another directory, the CLI in its own
process; every byte identical, and a modified object caught by its recorded sha256."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys

import pytest
from test_worker_archive import outcome, product_work, worker

import workflow
from workflow.core.errors import WorkflowError
from workflow.core.products import ChecksumMismatchError

pytestmark = pytest.mark.timeout(90)


def workflow_cli(*args: str, url: str, cwd) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "workflow.cli", *args, "--nats", url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=cwd)


async def archived_work(client, nats_url, directory, **options) -> str:
    [work_id] = await client.deposit(product_work(directory, size=1_500_000, **options))
    assert await worker(nats_url).run() == 0
    return work_id


async def test_another_client_in_another_directory_downloads_identical_bytes(client, nats_url, tmp_path):
    work_id = await archived_work(client, nats_url, tmp_path / "worker", method="move")
    originals = {f.name: f.sha256 for f in (await outcome(client, work_id)).archived}
    async with workflow.connect(nats_url) as reader:  # another connection, nothing local
        listed = await reader.products.list(work_id)
        assert [(f.kind, f.name, f.size) for f in listed] == [("product", "cand.dat", 1_500_000),
                                                              ("plot", "cand.png", listed[1].size)]
        written = await reader.products.download(work_id, tmp_path / "elsewhere")
        assert [p.name for p in written] == ["cand.dat", "cand.png"]
        for path in written:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == originals[path.name]
        streamed = b"".join([chunk async for chunk in reader.products.open(listed[1].uri)])
        assert streamed == (tmp_path / "elsewhere" / "cand.png").read_bytes()
        only = await reader.products.download(work_id, tmp_path / "one", ["cand.png"])
        assert [p.name for p in only] == ["cand.png"]
        with pytest.raises(WorkflowError, match=r"has no file named nope\.fits"):
            await reader.products.download(work_id, tmp_path / "none", ["nope.fits"])


async def test_products_ls_and_get_from_the_cli_in_another_process_and_directory(client, nats_url, tmp_path):
    work_id = await archived_work(client, nats_url, tmp_path / "worker")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = await asyncio.to_thread(workflow_cli, "products", "ls", work_id, "--json", url=nats_url, cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["size"], r["storage"]) for r in rows] == [
        ("cand.dat", 1_500_000, "objectstore"), ("cand.png", rows[1]["size"], "objectstore")]
    got = await asyncio.to_thread(workflow_cli, "products", "get", work_id, "cand.dat", "--to", "out",
                                  url=nats_url, cwd=elsewhere)
    assert got.returncode == 0, got.stderr
    assert "sha256 verified" in got.stdout
    assert (elsewhere / "out" / "cand.dat").read_bytes() == (tmp_path / "worker" / "cand.dat").read_bytes()
    assert not (elsewhere / "out" / "cand.png").exists()


async def test_a_modified_object_fails_checksum_verification_and_leaves_no_file(client, nats_url, tmp_path):
    work_id = await archived_work(client, nats_url, tmp_path / "worker")
    product = (await outcome(client, work_id)).archived[0]
    store = await client.nc.jetstream().object_store("PRODUCTS")
    key = product.uri.removeprefix("obj://PRODUCTS/")
    await store.put(key, b"tampered bytes")  # a consistent object of its own, but not what the log recorded
    with pytest.raises(ChecksumMismatchError, match="differs from the recorded"):
        await client.products.download(work_id, tmp_path / "got", ["cand.dat"])
    assert list((tmp_path / "got").iterdir()) == []
    got = await asyncio.to_thread(workflow_cli, "products", "get", work_id, "--to", "got2", url=nats_url,
                                  cwd=tmp_path)
    assert got.returncode == 1 and "altered or damaged" in got.stderr


async def test_a_file_deleted_at_archiving_cannot_be_fetched_and_says_why(client, nats_url, tmp_path):
    work_id = await archived_work(client, nats_url, tmp_path / "worker", method="delete")
    with pytest.raises(WorkflowError, match="was deleted when archived"):
        await client.products.download(work_id, tmp_path / "got")
