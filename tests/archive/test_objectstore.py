"""The object store storage against a real nats-server: streamed puts with their sha256,
reads back, the per-file limit, a full store (its own max_bytes, apart from the log)."""

from __future__ import annotations

import hashlib
import os

import pytest

from workflow.archive.objectstore import ObjectStoreStorage, ensure_bucket
from workflow.archive.storage import Place
from workflow.core.products import ArchiveError

pytestmark = pytest.mark.timeout(60)


def place(name: str = "big.dat", attempt: int = 1) -> Place:
    return Place(work_id="W1", pipeline="p", attempt=attempt, kind="product", name=name, created=0.0)


async def read_all(storage, uri: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(uri)])


async def test_server_creates_the_bucket_apart_from_the_log_and_a_put_streams_with_its_sha256(client, tmp_path):
    info = await client.nc.jetstream().stream_info("OBJ_PRODUCTS")  # created by prepare_log, as WORKFLOW is
    assert info.config.max_bytes > 0 and info.config.subjects == ["$O.PRODUCTS.C.>", "$O.PRODUCTS.M.>"]
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks, the last one short
    (tmp_path / "big.dat").write_bytes(data)
    storage = ObjectStoreStorage(client.nc, "PRODUCTS")
    stored = await storage.put(tmp_path / "big.dat", place(), limit=None)
    assert stored.uri == "obj://PRODUCTS/W1/1/products/big.dat"
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert await read_all(storage, stored.uri) == data
    assert await storage.keys("W1/") == [stored.uri]


async def test_a_file_over_the_storage_limit_is_refused_naming_the_limit_and_nothing_is_stored(client, tmp_path):
    (tmp_path / "big.dat").write_bytes(b"x" * 5000)
    storage = ObjectStoreStorage(client.nc, "PRODUCTS")
    with pytest.raises(ArchiveError, match=r"big.dat is 5,000 bytes, over the objectstore storage's limit of 4,096"):
        await storage.put(tmp_path / "big.dat", place(), limit=4096)
    assert await storage.keys() == []


async def test_a_full_object_store_refuses_the_upload_purges_its_chunks_and_takes_it_once_space_is_freed(
    client, tmp_path,
):
    await ensure_bucket(client.nc, "SMALL", max_bytes=2 * 1024 * 1024)
    storage = ObjectStoreStorage(client.nc, "SMALL")
    (tmp_path / "a.dat").write_bytes(os.urandom(1024 * 1024 + 5000))
    (tmp_path / "b.dat").write_bytes(os.urandom(1024 * 1024 + 5000))
    first = await storage.put(tmp_path / "a.dat", place("a.dat"), limit=None)
    with pytest.raises(ArchiveError, match="the object store SMALL is full"):
        await storage.put(tmp_path / "b.dat", place("b.dat"), limit=None)
    state = await client.nc.jetstream().stream_info("OBJ_SMALL")
    assert state.state.bytes < 2 * 1024 * 1024 - 100_000  # b's partial chunks were purged
    await storage.delete(first.uri)
    second = await storage.put(tmp_path / "b.dat", place("b.dat"), limit=None)
    assert await read_all(storage, second.uri) == (tmp_path / "b.dat").read_bytes()
