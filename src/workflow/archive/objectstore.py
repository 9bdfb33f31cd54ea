"""The embedded default storage: a JetStream object store on the system's own NATS.

No new server: the bucket (stream ``OBJ_PRODUCTS``) is replicated with the cluster and
reachable from leaf sites through the hub's JetStream domain, and readers need only their
NATS credentials. It has its own ``max_bytes``, apart from the ``WORKFLOW`` log stream, so
products that fill it fail their attempts (reason ``archive``) and never stop the log.
``workflow server`` creates it, as it creates the log's stream (:func:`ensure_bucket`).

Uploads go through nats-py's object store ``put``, fed by a :class:`HashingReader` that
counts and enforces the limit: the file is read in chunks in a thread, each chunk hashed
(by nats-py: its digest is the sha256 recorded), published and acknowledged before the
next, so memory is flat with the file's size; a failed upload purges the chunks it sent.
URIs are ``obj://<bucket>/<key>``.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import nats.aio.client
import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_DIGEST_TYPE, ObjectStore

from workflow.archive.storage import HashingReader, Place, Stored, check_size
from workflow.core.errors import NotFoundError, WorkflowError
from workflow.core.products import ArchiveError, ChecksumMismatchError, object_key

log = logging.getLogger("workflow.archive")

#: Bytes per object-store chunk (one NATS message each): well under the server's
#: max_payload (1 MB by default, 8 MB in our nats.conf) with room for headers.
CHUNK_BYTES = 512 * 1024
#: The object store's size unless ``workflow server --products-max-bytes`` says otherwise.
DEFAULT_MAX_BYTES = 10 << 30
SCHEME = "obj://"


def uri_of(bucket: str, key: str) -> str:
    return f"{SCHEME}{bucket}/{key}"


def parse_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``obj://`` URI."""
    if not uri.startswith(SCHEME) or "/" not in uri[len(SCHEME):]:
        raise WorkflowError(f"not an object store URI (obj://<bucket>/<key>): {uri!r}")
    bucket, _, key = uri[len(SCHEME):].partition("/")
    return bucket, key


async def ensure_bucket(
    nc: nats.aio.client.Client, bucket: str, max_bytes: int = DEFAULT_MAX_BYTES, replicas: int | None = None,
) -> bool:
    """Create the products bucket if missing (True when created). An existing one keeps its
    contents; its ``max_bytes`` is set to ``max_bytes`` if it differs (the operator's
    setting, logged), nothing else is changed."""
    js = nc.jetstream()
    stream = f"OBJ_{bucket}"
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        await js.create_object_store(bucket, config=api.ObjectStoreConfig(
            description="workflow products and plots (archived by workers, read by anyone allowed)",
            max_bytes=max_bytes, storage=api.StorageType.FILE, replicas=replicas or 1,
        ))
        return True
    if info.config.max_bytes != max_bytes:
        log.info("object store %s: max_bytes %s -> %s", bucket, info.config.max_bytes, max_bytes)
        info.config.max_bytes = max_bytes
        await js.update_stream(info.config)
    return False


class ObjectStoreStorage:
    """Products in a JetStream object store bucket, over an open NATS connection."""

    name = "objectstore"

    def __init__(self, nc: nats.aio.client.Client, bucket: str) -> None:
        self._nc = nc
        self.bucket = bucket
        self._store: ObjectStore | None = None

    async def store(self) -> ObjectStore:
        if self._store is None:
            try:
                self._store = await self._nc.jetstream().object_store(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                raise ArchiveError(
                    f"the object store {self.bucket} does not exist on this NATS server "
                    "(`workflow server` creates it; is this the system's server?)"
                ) from None
        return self._store

    async def put(self, source: Path, place: Place, limit: int | None) -> Stored:
        check_size(source, place.name, limit, self.name)
        store = await self.store()
        key = object_key(place.work_id, place.attempt, place.kind, place.name)
        meta = api.ObjectMeta(name=key, options=api.ObjectMetaOptions(max_chunk_size=CHUNK_BYTES))
        try:
            with open(source, "rb") as file:
                reader = HashingReader(file, place.name, limit, self.name, hashing=False)
                info = await store.put(key, reader, meta=meta)  # type: ignore[arg-type]  # reads with readinto
        except ArchiveError:
            raise
        except OSError as error:
            raise ArchiveError(f"cannot read {source}: {error.strerror or error}") from None
        except nats.js.errors.APIError as error:
            raise ArchiveError(self._refusal(place.name, error)) from None
        except (nats.errors.Error, TimeoutError) as error:
            raise ArchiveError(
                f"cannot upload {place.name} to the object store {self.bucket}: {type(error).__name__} {error}"
            ) from None
        # nats-py hashed each chunk as it published it: the digest of the bytes stored
        sha256 = base64.urlsafe_b64decode((info.digest or "").replace(OBJ_DIGEST_TYPE, "")).hex()
        return Stored(uri=uri_of(self.bucket, key), size=reader.size, sha256=sha256)

    def _refusal(self, name: str, error: nats.js.errors.APIError) -> str:
        text = error.description or str(error)
        if "maximum bytes" in text or "insufficient" in text or "resources" in text:
            return (
                f"the object store {self.bucket} is full ({text}): {name} was not stored "
                "(free space with `workflow delete ID --products`, or raise `workflow server --products-max-bytes`)"
            )
        return f"the object store {self.bucket} refused {name}: {text}"

    async def read(self, uri: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks (an ordered consumer on its chunk subject); its
        own digest is checked at the end, so a torn read never passes as whole."""
        bucket, key = parse_uri(uri)
        store = await (self.store() if bucket == self.bucket else ObjectStoreStorage(self._nc, bucket).store())
        try:
            info = await store.get_info(key)
        except nats.js.errors.ObjectNotFoundError:
            raise NotFoundError(f"{uri} is not in the object store (deleted?)") from None
        if not info.size:
            return
        import hashlib

        digest = hashlib.sha256()
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=info.nuid)
        sub = await self._nc.jetstream().subscribe(subject, stream=f"OBJ_{bucket}", ordered_consumer=True)
        try:
            received = 0
            while received < info.size:
                msg = await sub.next_msg(timeout=30)
                digest.update(msg.data)
                received += len(msg.data)
                yield msg.data
        finally:
            await sub.unsubscribe()
        expected = base64.urlsafe_b64decode((info.digest or "").replace(OBJ_DIGEST_TYPE, ""))
        if digest.digest() != expected:
            raise ChecksumMismatchError(f"{uri}: the object's bytes do not match its own digest (torn or altered)")

    async def delete(self, uri: str) -> None:
        _, key = parse_uri(uri)
        store = await self.store()
        try:
            await store.delete(key)
        except nats.js.errors.ObjectNotFoundError:
            pass
        except nats.js.errors.ObjectDeletedError:
            pass

    async def keys(self, prefix: str = "") -> list[str]:
        """Every live object's URI (under ``prefix``): the last metadata message of each
        object, read with an ordered consumer named by its stream (nats-py's ``list`` looks
        the stream up by subject, which a role without ``STREAM.NAMES`` may not)."""
        await self.store()
        js = self._nc.jetstream()
        stream, subject = f"OBJ_{self.bucket}", f"$O.{self.bucket}.M.>"
        info = await js.stream_info(stream, subjects_filter=subject)
        total = len(info.state.subjects or {})  # one message per object (rolled up)
        found: list[str] = []
        if not total:
            return found
        sub = await js.subscribe(subject, stream=stream, ordered_consumer=True,
                                 deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT)
        try:
            for _ in range(total):
                meta = json.loads((await sub.next_msg(timeout=30)).data)
                name = meta.get("name", "")
                if not meta.get("deleted") and name.startswith(prefix):
                    found.append(uri_of(self.bucket, name))
        finally:
            await sub.unsubscribe()
        return sorted(found)
