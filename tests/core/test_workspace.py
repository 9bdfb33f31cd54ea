"""Workspace files: parsed and checked at once (fields named), per-site archive settings
over the workspace's, the environment over both, and no secrets."""

from __future__ import annotations

import pytest

from workflow.core.errors import ValidationError
from workflow.core.workspace import parse, parse_size

EXAMPLE = """
name: chime-frb
sites: [chime, kko]
nats: [nats://hub-1:4222, nats://hub-2:4222]
archive:
  storage: posix
  mount: /data/archive
  methods: [copy, move]
  limits: {posix: 2GiB, objectstore: 500MB}
  roots: [/data/scratch]
  permissions: "setfacl -m g:{group}:r {path}"
  permissions_fields: {group: frb}
  sites:
    kko: {storage: objectstore}
"""


def test_a_workspace_gives_each_site_its_archive_settings_and_the_environment_overrides():
    workspace = parse(EXAMPLE)
    assert workspace.nats_url() == "nats://hub-1:4222,nats://hub-2:4222"
    chime = workspace.archive_for("chime")
    assert (chime.storage, chime.mount, chime.roots) == ("posix", "/data/archive", ["/data/scratch"])
    assert chime.limit("posix") == 2 << 30 and chime.limit("objectstore") == 500_000_000
    assert chime.allowed_methods() == frozenset({"copy", "move"})
    assert workspace.archive_for("kko").storage == "objectstore"
    overridden = workspace.archive_for("chime", {"WORKFLOW_ARCHIVE_MOUNT": "/mnt/other",
                                                 "WORKFLOW_ARCHIVE_ROOTS": "/a:/b"})
    assert (overridden.mount, overridden.roots) == ("/mnt/other", ["/a", "/b"])


def test_strict_sites_refuse_a_site_the_workspace_does_not_name():
    with pytest.raises(ValidationError, match="'gbo' is not a site of workspace chime-frb"):
        parse(EXAMPLE).check_site("gbo")


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nnats: [nats://a]\npassword: hunter2\n", "password: looks like a secret"),
    ("name: x\narchive: {s3: {bucket: b, aws_secret_access_key: k}}\n", r"archive.s3.aws_secret_access_key"),
    ("name: x\narchive: {storage: posix}\n", "storage posix needs a mount"),
    ("name: x\narchive: {methods: [keep]}\n", "archive"),
    ("name: x\narchive: {limits: {posix: lots}}\n", "archive.limits.posix: expected a size"),
    ("name: x\ncolour: blue\n", "unknown field `colour`"),
    ("[unclosed", "not valid YAML"),
])
def test_a_bad_workspace_is_refused_naming_what_is_wrong(text, message):
    with pytest.raises(ValidationError, match=message):
        parse(text)


def test_sizes_read_as_people_write_them():
    assert [parse_size(v, "f") for v in (10, "1KiB", "1.5 GB", "3MB")] == [10, 1024, 1_500_000_000, 3_000_000]
