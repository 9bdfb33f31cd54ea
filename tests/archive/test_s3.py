"""S3-compatible storage against a local S3 server (moto's): the worker archives into a
bucket, `products get` fetches from it (credentials from the environment only), a
missing credential is said plainly, and delete/audit reach it."""

from __future__ import annotations

import hashlib
import urllib.request

import pytest
from moto.server import ThreadedMotoServer
from test_worker_archive import outcome, product_work, worker

from workflow.archive.s3 import S3Storage
from workflow.core import events as ev
from workflow.core.archiving import ArchiveSettings, S3Settings
from workflow.core.errors import WorkflowError

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on a free port with an empty bucket ``products``; its endpoint."""
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/products", method="PUT"), timeout=10)
    try:
        yield endpoint
    finally:
        server.stop()


def s3_settings(endpoint: str) -> ArchiveSettings:
    return ArchiveSettings(storage="s3", s3=S3Settings(bucket="products", endpoint=endpoint, prefix="site-a"))


async def test_a_worker_archives_into_s3_and_another_client_fetches_identical_bytes(client, nats_url, tmp_path, s3):
    [work_id] = await client.deposit(product_work(tmp_path / "w", size=9_000_000, method="move"))  # 2 parts
    assert await worker(nats_url, archive=s3_settings(s3)).run() == 0
    event = await outcome(client, work_id)
    assert isinstance(event, ev.Succeeded), event
    product, plot = event.archived
    assert product.uri == f"s3://products/site-a/{work_id}/1/products/cand.dat" and product.storage == "s3"
    assert product.size == 9_000_000 and not (tmp_path / "w" / "cand.dat").exists()
    got = await client.products.download(work_id, tmp_path / "elsewhere")
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in got] == [product.sha256, plot.sha256]
    storage = S3Storage(s3_settings(s3).s3)
    # this work's keys (moto's buckets are one per process: other tests' works share it)
    assert sorted(await storage.keys(f"{work_id}/")) == sorted([product.uri, plot.uri])
    deleted = await client.delete(work_id, products=True)
    assert sorted(deleted.products_removed) == sorted([product.uri, plot.uri])
    assert await storage.keys(f"{work_id}/") == []


async def test_without_s3_credentials_the_reader_and_the_worker_are_told_what_is_missing(
    client, nats_url, tmp_path, s3, monkeypatch,
):
    [work_id] = await client.deposit(product_work(tmp_path / "w"))
    assert await worker(nats_url, archive=s3_settings(s3)).run() == 0
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(WorkflowError, match="no S3 credentials on this machine: set AWS_ACCESS_KEY_ID"):
        await client.products.download(work_id, tmp_path / "got")
    [second] = await client.deposit(product_work(tmp_path / "v", retries=0))
    assert await worker(nats_url, archive=s3_settings(s3)).run() == 0
    failed = await outcome(client, second)
    assert failed.reason == "archive" and "no S3 credentials" in failed.error
