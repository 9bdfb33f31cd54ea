"""Workspaces: one YAML file per project naming its sites, NATS URLs and archive settings.

The old system's site configuration, kept in one place instead of environment variables
scattered over machines. A workspace says which sites a project uses, where its NATS
servers are (a list: failover), and how each site archives products and plots (storage,
mount, allowed methods, per-file limits, allowed roots, a permissions command template),
with per-site overrides. Environment variables still override it (:func:`archive_for`
takes them as a mapping, so this module stays pure). **No secrets**: a key that looks like
one (password, token, secret, credentials, access key) is refused, since the file is
copied around and shown by ``workflow workspace show``; secrets stay in the environment
and credential files.

Example::

    name: chime-frb
    sites: [chime, kko, gbo]
    nats: [nats://hub-1:4222, nats://hub-2:4222]
    archive:
      storage: posix
      mount: /data/chime/archive
      methods: [copy, move, bypass]
      limits: {objectstore: 1GiB, posix: 500GiB}
      roots: [/data/scratch]
      permissions: "setfacl -m g:{group}:r {path}"
      permissions_fields: {group: frb}
      sites:
        kko: {storage: objectstore}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec
import yaml

from workflow.core.archiving import ArchiveSettings
from workflow.core.errors import ValidationError

_SECRET = re.compile(r"password|passwd|token|secret|credential|access_key|private_key", re.IGNORECASE)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


class Workspace(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A parsed workspace. ``archive`` is the raw mapping (with its per-site ``sites``);
    :meth:`archive_for` gives one site's settings."""

    name: str
    sites: list[str] = msgspec.field(default_factory=list)
    nats: list[str] = msgspec.field(default_factory=list)
    archive: dict[str, Any] = msgspec.field(default_factory=dict)

    def nats_url(self) -> str | None:
        """The NATS URLs as one comma-separated URL (what ``--nats`` takes), None if unset."""
        return ",".join(self.nats) or None

    def check_site(self, site: str) -> None:
        """Refuse a site the workspace does not name (strict mode), when it names any."""
        if self.sites and site not in self.sites:
            raise ValidationError(
                "site", f"{site!r} is not a site of workspace {self.name} (its sites: {', '.join(self.sites)})"
            )

    def archive_for(self, site: str, env: Mapping[str, str] | None = None) -> ArchiveSettings:
        """The archive settings of ``site``: the workspace's, the site's overrides on top,
        then the environment's (``WORKFLOW_ARCHIVE_STORAGE``, ``_MOUNT``, ``_BUCKET``,
        ``_ROOTS`` colon-separated, ``_METHODS`` comma-separated)."""
        return archive_settings(self.archive, site, env)


def parse_size(value: Any, field: str) -> int:
    """Bytes from ``1073741824``, ``"1GiB"``, ``"500 MB"``; a ValidationError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(field, f"expected a size in bytes like 1073741824, '1GiB' or '500MB', got {value!r}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])


def _refuse_secrets(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if _SECRET.search(str(key)):
                raise ValidationError(
                    f"{where}{key}", "looks like a secret: secrets stay in the environment or a credentials "
                    "file (WORKFLOW_NATS_PASSWORD, AWS_SECRET_ACCESS_KEY, --nats-creds), never in a workspace",
                )
            _refuse_secrets(item, f"{where}{key}.")
    elif isinstance(value, list):
        for item in value:
            _refuse_secrets(item, where)


def parse(text: str) -> Workspace:
    """A Workspace from YAML text; a ValidationError naming the field for anything wrong,
    including every site's archive settings (checked now, not when a worker starts)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValidationError("workspace", f"not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ValidationError("workspace", "expected a mapping with at least a name")
    _refuse_secrets(raw, "")
    if isinstance(raw.get("nats"), str):
        raw["nats"] = [raw["nats"]]
    try:
        workspace = msgspec.convert(raw, Workspace)
    except msgspec.ValidationError as error:
        raise ValidationError("workspace", str(error)) from None
    for site in [None, *workspace.sites, *(workspace.archive.get("sites") or {})]:
        archive_settings(workspace.archive, site or "", {})
    return workspace


def archive_settings(archive: dict[str, Any], site: str, env: Mapping[str, str] | None) -> ArchiveSettings:
    """See :meth:`Workspace.archive_for`."""
    merged = {key: value for key, value in archive.items() if key != "sites"}
    per_site = (archive.get("sites") or {})
    if not isinstance(per_site, dict):
        raise ValidationError("archive.sites", "expected a mapping of site name to settings")
    merged.update(per_site.get(site) or {})
    env = env or {}
    for name, key in (("STORAGE", "storage"), ("MOUNT", "mount"), ("BUCKET", "bucket")):
        if env.get(f"WORKFLOW_ARCHIVE_{name}"):
            merged[key] = env[f"WORKFLOW_ARCHIVE_{name}"]
    if env.get("WORKFLOW_ARCHIVE_ROOTS"):
        merged["roots"] = [root for root in env["WORKFLOW_ARCHIVE_ROOTS"].split(":") if root]
    if env.get("WORKFLOW_ARCHIVE_METHODS"):
        merged["methods"] = [m.strip() for m in env["WORKFLOW_ARCHIVE_METHODS"].split(",") if m.strip()]
    if "limits" in merged:
        limits = merged["limits"]
        if not isinstance(limits, dict):
            raise ValidationError("archive.limits", "expected a mapping of storage name to a size")
        merged["limits"] = {storage: parse_size(size, f"archive.limits.{storage}") for storage, size in limits.items()}
    try:
        settings = msgspec.convert(merged, ArchiveSettings)
    except msgspec.ValidationError as error:
        raise ValidationError("archive" + (f" (site {site})" if site else ""), str(error)) from None
    if settings.storage == "posix" and not settings.mount:
        raise ValidationError("archive.mount", f"storage posix needs a mount{f' for site {site}' if site else ''}")
    if settings.storage == "s3" and settings.s3 is None:
        raise ValidationError("archive.s3", "storage s3 needs s3: {bucket: ..., endpoint: ...}")
    return settings
