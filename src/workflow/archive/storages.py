"""Which storage a site archives into, and which storage reads a URI: the one place that
maps settings and URI schemes to the storage classes."""

from __future__ import annotations

import nats.aio.client

from workflow.archive.objectstore import ObjectStoreStorage
from workflow.archive.posix import PosixStorage
from workflow.archive.s3 import S3Storage
from workflow.archive.storage import Storage
from workflow.core.archiving import ArchiveSettings
from workflow.core.products import ArchiveError


def storage_for(settings: ArchiveSettings, nc: nats.aio.client.Client) -> Storage:
    """The storage ``settings`` name, over ``nc`` for the object store."""
    if settings.storage == "objectstore":
        return ObjectStoreStorage(nc, settings.bucket)
    if settings.storage == "posix":
        if not settings.mount:
            raise ArchiveError("storage posix needs a mount (archive.mount in the workspace; WORKFLOW_ARCHIVE_MOUNT)")
        return PosixStorage(settings.mount, settings.permissions, settings.permissions_fields)
    if settings.s3 is None:
        raise ArchiveError("storage s3 needs its bucket (archive.s3 in the workspace)")
    return S3Storage(settings.s3)
