"""A POSIX mount as the site's storage: the dated layout, the permissions template, a
missing mount said plainly; and the workspace CLI with `workflow run --workspace` in a
real process."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from test_worker_archive import outcome, product_work, worker

from workflow.core import events as ev
from workflow.core.archiving import ArchiveSettings

pytestmark = pytest.mark.timeout(90)


async def test_posix_storage_lays_files_out_by_day_pipeline_id_and_attempt_and_applies_permissions(
    client, nats_url, tmp_path,
):
    mount = tmp_path / "mount"
    mount.mkdir()
    settings = ArchiveSettings(storage="posix", mount=str(mount), permissions="chmod {mode} {path}",
                               permissions_fields={"mode": "640"})
    [work_id] = await client.deposit(product_work(tmp_path / "w", method="move", size=2_000_000))
    assert await worker(nats_url, archive=settings).run() == 0
    event = await outcome(client, work_id)
    assert isinstance(event, ev.Succeeded), event
    day = datetime.fromtimestamp((await client.get(work_id)).creation, tz=UTC).strftime("%Y%m%d")
    expected = mount / day / "arch" / work_id / "1" / "products" / "cand.dat"
    assert event.archived[0].uri == f"file://{expected}" and event.archived[0].storage == "posix"
    assert expected.stat().st_size == 2_000_000 and stat.S_IMODE(expected.stat().st_mode) == 0o640
    assert not (tmp_path / "w" / "cand.dat").exists()  # moved
    got = await client.products.download(work_id, tmp_path / "elsewhere")
    assert [p.read_bytes() for p in got] == [expected.read_bytes(), (expected.parent.parent / "plots" /
                                                                      "cand.png").read_bytes()]


async def test_a_missing_mount_or_a_failing_permissions_command_fails_the_attempt_with_archive(
    client, nats_url, tmp_path,
):
    [missing, denied] = await client.deposit([product_work(tmp_path / "a", retries=0),
                                              product_work(tmp_path / "b", retries=0)])
    gone = ArchiveSettings(storage="posix", mount=str(tmp_path / "not-mounted"))
    assert await worker(nats_url, archive=gone).run() == 0
    event = await outcome(client, missing)
    assert event.reason == "archive" and "not-mounted is not present on this machine" in event.error
    (tmp_path / "mount").mkdir()
    failing = ArchiveSettings(storage="posix", mount=str(tmp_path / "mount"), permissions="false {path}")
    assert await worker(nats_url, archive=failing).run() == 0
    event = await outcome(client, denied)
    assert event.reason == "archive" and "the permissions command false" in event.error


def cli(*args: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workflow.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=cwd)


async def test_workspace_set_ls_show_unset_and_run_with_a_workspace_archives_to_its_mount(
    client, nats_url, tmp_path,
):
    mount = tmp_path / "mount"
    mount.mkdir()
    work_dir = tmp_path / "w"
    file = tmp_path / "site.yml"
    file.write_text(f"name: test-site\nsites: [local]\nnats: [{nats_url}]\n"
                    f"archive:\n  storage: objectstore\n  sites:\n    local: {{storage: posix, mount: {mount}}}\n")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("WORKFLOW_NATS_URL", None)
    assert (await asyncio.to_thread(cli, "workspace", "set", str(file), env=env, cwd=tmp_path)).returncode == 0
    listed = await asyncio.to_thread(cli, "workspace", "ls", env=env, cwd=tmp_path)
    assert listed.stdout.split() == ["*", "test-site"]
    shown = await asyncio.to_thread(cli, "workspace", "show", env=env, cwd=tmp_path)
    assert shown.stdout == file.read_text()
    refused = await asyncio.to_thread(cli, "deposit", "arch", "--site", "kko", env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "'kko' is not a site of workspace test-site" in refused.stderr
    [work_id] = await client.deposit(product_work(work_dir))
    # the NATS URL and the mount come from the active workspace: no --nats, no environment
    ran = await asyncio.to_thread(cli, "run", "arch", "--function", "workflow.examples.with_products",
                                  "--lives", "1", "--isolation", "thread", env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    [product, _] = (await outcome(client, work_id)).archived
    assert product.uri.startswith(f"file://{mount}/") and product.storage == "posix"
    assert (await asyncio.to_thread(cli, "workspace", "unset", env=env, cwd=tmp_path)).returncode == 0
    assert (await asyncio.to_thread(cli, "workspace", "show", env=env, cwd=tmp_path)).returncode == 1
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\nnats_password: hunter2\n")
    refused = await asyncio.to_thread(cli, "workspace", "set", str(bad), env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "looks like a secret" in refused.stderr
    # --workspace FILE on the command line, for a site it does not name: refused at once
    other = await asyncio.to_thread(cli, "run", "arch", "--site", "kko", "--workspace", str(file), "--lives", "1",
                                    env=env, cwd=tmp_path)
    assert other.returncode == 2 and "'kko' is not a site of workspace test-site" in other.stderr
