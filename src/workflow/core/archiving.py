"""A site's archive settings: which storage takes products, where, and within what limits.

Pure data (msgspec), read from the workspace file's ``archive`` section
(:mod:`workflow.core.workspace`) and overridden by environment variables at the edge; the
worker's archiver and the product readers take one of these, never the environment.
"""

from __future__ import annotations

from typing import Literal

import msgspec

#: The storages a site may archive into: the JetStream object store on the system's own
#: NATS (the default: nothing to set up), a POSIX mount, or S3-compatible storage.
StorageKind = Literal["objectstore", "posix", "s3"]

#: The object store's bucket (its stream is ``OBJ_PRODUCTS``), created by ``workflow server``.
DEFAULT_BUCKET = "PRODUCTS"
#: Per-file limit of the object store unless the site sets one: a telescope's many-GB
#: files belong on a mount or S3; the object store shares the log's disk.
DEFAULT_OBJECTSTORE_FILE_LIMIT = 1 << 30


class S3Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where an S3-compatible store is (credentials come from the environment, never here)."""

    bucket: str
    endpoint: str | None = None
    region: str | None = None
    prefix: str = ""


class ArchiveSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a site archives: ``storage`` and its place (``mount``, ``bucket``, ``s3``); the
    ``methods`` it allows (None: all four); ``limits`` in bytes per file, per storage
    name; ``roots``: directories besides the work's own ``path`` whose files may be
    archived; ``permissions``: a command run on each archived POSIX file
    (``setfacl -m g:{group}:r {path}``: ``{path}`` and the template's other fields)."""

    storage: StorageKind = "objectstore"
    bucket: str = DEFAULT_BUCKET
    mount: str | None = None
    s3: S3Settings | None = None
    methods: list[Literal["bypass", "copy", "move", "delete"]] | None = None
    limits: dict[str, int] = msgspec.field(default_factory=dict)
    roots: list[str] = msgspec.field(default_factory=list)
    permissions: str | None = None
    permissions_fields: dict[str, str] = msgspec.field(default_factory=dict)

    def limit(self, storage: str) -> int | None:
        """The per-file limit of ``storage`` (bytes), None when it has none."""
        if storage in self.limits:
            return self.limits[storage]
        return DEFAULT_OBJECTSTORE_FILE_LIMIT if storage == "objectstore" else None

    def allowed_methods(self) -> frozenset[str] | None:
        return None if self.methods is None else frozenset(self.methods)
