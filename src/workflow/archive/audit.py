"""``workflow audit --products``: the archive against the log.

Three kinds of anomaly, each a line with the URI and the work:

- ``orphan``: an object in the products object store that no event records (an upload
  whose attempt was refused and not cleaned up, a zombie's late upload, a crash between
  upload and record);
- ``missing``: a recorded file its storage no longer has (and no ``delete --products``
  removed);
- ``checksum``: a recorded file whose bytes no longer have the recorded sha256.

Every recorded file is read back whole to check its sha256: the audit costs a read of the
archive. A ``file://`` file on a mount this machine does not have is skipped and counted,
not reported as missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nats.aio.client
import nats.errors

from workflow.archive.objectstore import ObjectStoreStorage
from workflow.archive.posix import path_of, read_file
from workflow.archive.s3 import read_s3
from workflow.archive.storage import sha256_of
from workflow.core import events as ev
from workflow.core.archiving import DEFAULT_BUCKET
from workflow.core.errors import NotFoundError, WorkflowError
from workflow.core.products import ArchivedFile, scheme
from workflow.core.subjects import PREFIX, STREAM

#: How long one event of the walk may take to arrive before the walk gives up.
READ_TIMEOUT = 30.0


@dataclass
class ProductsAudit:
    """What the audit found: ``anomalies`` (kind, uri, work_id, detail), and counts."""

    anomalies: list[dict[str, str]] = field(default_factory=list)
    checked: int = 0
    skipped: int = 0


async def outcome_events(nc: nats.aio.client.Client) -> list[ev.AnyEvent]:
    """Every outcome and delete event of the log (an ordered consumer per event type)."""
    js = nc.jetstream()
    found: list[ev.AnyEvent] = []
    for name in ("succeeded", "failed", "deleted"):
        subject = f"{PREFIX}.*.*.{name}"
        info = await js.stream_info(STREAM, subjects_filter=subject)
        total = sum((info.state.subjects or {}).values())
        if not total:
            continue
        sub = await js.subscribe(subject, stream=STREAM, ordered_consumer=True)
        try:
            for _ in range(total):
                msg = await sub.next_msg(timeout=READ_TIMEOUT)
                try:
                    found.append(ev.decode(msg.data))
                except WorkflowError:
                    continue  # a message the log's own audit reports; not a product's concern
        finally:
            await sub.unsubscribe()
    return found


async def audit_products(nc: nats.aio.client.Client, bucket: str = DEFAULT_BUCKET) -> ProductsAudit:
    """Compare the archive with what the log records (see the module docstring)."""
    events = await outcome_events(nc)
    removed = {uri for e in events if isinstance(e, ev.Deleted) for uri in e.products_removed or []}
    recorded: dict[str, tuple[str, ArchivedFile]] = {}
    for event in events:
        if isinstance(event, (ev.Succeeded, ev.Failed)):
            for item in event.archived or []:
                if item.uri is not None and item.storage is not None and item.uri not in removed:
                    recorded[item.uri] = (event.work_id, item)
    audit = ProductsAudit()
    store = ObjectStoreStorage(nc, bucket)
    try:
        held = await store.keys()
    except WorkflowError:
        held = []
    for uri in sorted(set(held) - set(recorded)):
        audit.anomalies.append({"kind": "orphan", "uri": uri, "work_id": uri.split("/")[3],
                                "detail": "stored, but no event records it"})
    for uri, (work_id, item) in sorted(recorded.items()):
        kind = scheme(uri)
        if kind == "file" and not path_of(uri).parent.parent.exists():
            audit.skipped += 1  # the mount is not on this machine
            continue
        try:
            chunks = store.read(uri) if kind == "obj" else read_s3(uri) if kind == "s3" else read_file(uri)
            size, sha256 = await sha256_of(chunks)
        except NotFoundError:
            audit.anomalies.append({"kind": "missing", "uri": uri, "work_id": work_id,
                                    "detail": f"{item.name}: recorded, but its storage does not have it"})
            continue
        except (TimeoutError, WorkflowError, nats.errors.Error) as error:
            audit.anomalies.append({"kind": "checksum", "uri": uri, "work_id": work_id,
                                    "detail": f"{item.name}: cannot be read whole: {error}"})
            continue
        audit.checked += 1
        if sha256 != item.sha256:
            audit.anomalies.append({"kind": "checksum", "uri": uri, "work_id": work_id, "detail": (
                f"{item.name}: sha256 {sha256[:16]}… ({size:,} bytes) differs from the recorded "
                f"{(item.sha256 or '')[:16]}… ({item.size or 0:,} bytes)")})
    return audit
