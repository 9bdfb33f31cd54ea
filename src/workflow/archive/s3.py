"""S3-compatible storage (MinIO, CANFAR, Ceph, AWS) through obstore.

Why obstore: it is async (no thread per request, as boto3/minio would need), streams both
ways (a put takes an async iterator of chunks and sends them as a multipart upload; a get
is an async stream), its Rust core releases the GIL while it hashes and sends, it talks
to any S3-compatible endpoint, and it brings no botocore (tens of MB) with it. The
credentials come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``) or the instance, never from the workspace; the endpoint from the
workspace (``archive.s3.endpoint``) or ``AWS_ENDPOINT_URL``.

The file is read in chunks in a thread and hashed as it is handed to obstore, so the
sha256 recorded is that of the bytes sent, and the per-file limit is enforced as it
streams. URIs are ``s3://<bucket>/<key>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import obstore
import obstore.exceptions
from obstore.store import S3Store

from workflow.archive.storage import Place, Stored, check_size
from workflow.core.archiving import S3Settings
from workflow.core.errors import NotFoundError, WorkflowError
from workflow.core.products import ArchiveError, object_key, over_limit_message

SCHEME = "s3://"
#: Multipart part size, and how many parts are in flight: at most ~32 MiB buffered.
PART_BYTES = 8 << 20
PARTS_IN_FLIGHT = 4


def parse_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://`` URI."""
    if not uri.startswith(SCHEME) or "/" not in uri[len(SCHEME):]:
        raise WorkflowError(f"not an S3 URI (s3://<bucket>/<key>): {uri!r}")
    bucket, _, key = uri[len(SCHEME):].partition("/")
    return bucket, key


def open_store(bucket: str, endpoint: str | None = None, region: str | None = None) -> S3Store:
    """An obstore S3Store; a missing credential is said plainly, before any request."""
    if not (os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY")):
        raise ArchiveError(
            "no S3 credentials on this machine: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(never in the workspace file)"
        )
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    options: dict[str, Any] = {}
    if endpoint:
        options["endpoint"] = endpoint
        options["virtual_hosted_style_request"] = False  # MinIO, Ceph, moto: path-style
    return S3Store(bucket, region=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                   client_options={"allow_http": bool(endpoint and endpoint.startswith("http://"))}, **options)


class S3Storage:
    """Products in an S3 bucket (under ``prefix``)."""

    name = "s3"

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._store: S3Store | None = None

    def store(self) -> S3Store:
        if self._store is None:
            self._store = open_store(self.settings.bucket, self.settings.endpoint, self.settings.region)
        return self._store

    def _key(self, place: Place) -> str:
        key = object_key(place.work_id, place.attempt, place.kind, place.name)
        prefix = self.settings.prefix.strip("/")
        return f"{prefix}/{key}" if prefix else key

    async def put(self, source: Path, place: Place, limit: int | None) -> Stored:
        check_size(source, place.name, limit, self.name)
        store = self.store()
        key = self._key(place)
        digest = hashlib.sha256()
        size = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal size
            with open(source, "rb") as file:
                while chunk := await asyncio.to_thread(file.read, PART_BYTES):
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise ArchiveError(over_limit_message(place.name, size, limit, self.name))
                    digest.update(chunk)
                    yield chunk

        try:
            await obstore.put_async(store, key, chunks(), chunk_size=PART_BYTES, max_concurrency=PARTS_IN_FLIGHT)
        except ArchiveError:
            await self._forget(key)
            raise
        except OSError as error:
            await self._forget(key)
            raise ArchiveError(f"cannot read {source}: {error.strerror or error}") from None
        except obstore.exceptions.BaseError as error:
            await self._forget(key)
            raise ArchiveError(f"S3 bucket {self.settings.bucket} refused {place.name}: {error}") from None
        return Stored(uri=f"{SCHEME}{self.settings.bucket}/{key}", size=size, sha256=digest.hexdigest())

    async def _forget(self, key: str) -> None:
        try:
            await obstore.delete_async(self.store(), key)
        except obstore.exceptions.BaseError:
            pass

    def read(self, uri: str) -> AsyncIterator[bytes]:
        return read_s3(uri, self.store())

    async def delete(self, uri: str) -> None:
        _, key = parse_uri(uri)
        await self._forget(key)

    async def keys(self, prefix: str = "") -> list[str]:
        found = []
        base = self.settings.prefix.strip("/")
        async for batch in obstore.list(self.store(), prefix=f"{base}/{prefix}" if base else prefix or None):
            found += [f"{SCHEME}{self.settings.bucket}/{item['path']}" for item in batch]
        return found


async def read_s3(uri: str, store: S3Store | None = None) -> AsyncIterator[bytes]:
    """The bytes of an ``s3://`` URI, streamed (credentials and endpoint from the environment
    unless a store is given)."""
    bucket, key = parse_uri(uri)
    store = store or open_store(bucket)
    try:
        response = await obstore.get_async(store, key)
        async for chunk in response.stream(min_chunk_size=1 << 20):
            yield bytes(chunk)
    except obstore.exceptions.NotFoundError:
        raise NotFoundError(f"{uri} is not in its S3 bucket (deleted?)") from None
    except obstore.exceptions.BaseError as error:
        raise WorkflowError(f"cannot read {uri}: {error}") from None


async def remove(uri: str) -> None:
    """Remove an ``s3://`` URI (credentials and endpoint from the environment)."""
    bucket, key = parse_uri(uri)
    try:
        await obstore.delete_async(open_store(bucket), key)
    except obstore.exceptions.NotFoundError:
        pass
