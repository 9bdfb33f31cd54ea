"""Roles enforced by NATS: ``workflow secure init`` and ``workflow server --config``, against
a real server. Every refusal is the server's; the CLI turns it into one line and exit 4."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import workflow
from workflow.core import events as ev
from workflow.core.errors import PermissionDeniedError
from workflow.core.roles import ROLES, parse_env

pytestmark = pytest.mark.timeout(90)

PERMISSION_DENIED = 4


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workflow.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WORKFLOW_NATS_")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):
    """``workflow secure init DIR`` and ``workflow server --config DIR/nats.conf``: (DIR, URL)."""
    directory = tmp_path_factory.mktemp("secure")
    assert cli("secure", "init", str(directory / "roles"), env=clean_env()).returncode == 0
    log_path = directory / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "workflow.cli", "server", "--config", str(directory / "roles" / "nats.conf"),
             "--port", "-1", "--data-dir", str(directory / "data")],
            env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
        )
    try:  # a server that never got ready is stopped too
        deadline = time.monotonic() + 30
        while not (match := re.search(r"workflow server ready on (\S+)", log_path.read_text())):
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        yield directory / "roles", match.group(1)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def role(secured: tuple[Path, str], name: str) -> dict[str, str]:
    """The environment of a process of role ``name`` (its .env file) on the secured server."""
    directory, url = secured
    return clean_env(WORKFLOW_NATS_URL=url, **parse_env((directory / f"{name}.env").read_text()))


def credentials(secured: tuple[Path, str], name: str) -> dict[str, str]:
    values = parse_env((secured[0] / f"{name}.env").read_text())
    return {"user": values["WORKFLOW_NATS_USER"], "password": values["WORKFLOW_NATS_PASSWORD"]}


@pytest.fixture
def pipeline(request: pytest.FixtureRequest) -> str:
    """A pipeline of the test's own: the server is the module's, the works are not (a
    worker's ``--lives 1`` takes the first work of its pipeline, whichever test left it)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", request.node.name)[:100]


def deposit(secured: tuple[Path, str], pipeline: str, name: str = "depositor") -> subprocess.CompletedProcess[str]:
    return cli("deposit", pipeline, "--function", "workflow.examples.add", "-P", "a=1", "-P", "b=2",
               env=role(secured, name))


def assert_denied(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == PERMISSION_DENIED, result.stderr
    assert "permission denied" in result.stderr and what in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_secure_init_writes_a_config_and_a_private_env_file_per_role(secured):
    directory, _ = secured
    config = (directory / "nats.conf").read_text()
    assert "max_payload: 8MB" in config and "authorization {" in config
    for name in ROLES:
        path = directory / f"{name}.env"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        values = parse_env(path.read_text())
        assert values["WORKFLOW_NATS_USER"] == name and len(values["WORKFLOW_NATS_PASSWORD"]) >= 32
        assert values["WORKFLOW_NATS_PASSWORD"] not in config  # only its bcrypt hash
    assert stat.S_IMODE((directory / "nats.conf").stat().st_mode) == 0o600


def test_secure_init_refuses_to_overwrite_existing_passwords(secured):
    result = cli("secure", "init", str(secured[0]), env=clean_env())
    assert result.returncode == 1 and "--force" in result.stderr


def test_a_depositor_deposits_and_a_worker_runs_it(secured, pipeline):
    result = deposit(secured, pipeline)
    assert result.returncode == 0, result.stderr
    work_id = result.stdout.strip()
    run = cli("run", pipeline, "--lives", "1", "--sleep", "1", env=role(secured, "worker"))
    assert run.returncode == 0, run.stdout + run.stderr
    shown = cli("show", work_id, "--json", env=role(secured, "viewer"))
    assert '"status":"success"' in shown.stdout.replace(" ", ""), shown.stdout + shown.stderr


def test_a_viewer_cannot_deposit_or_cancel(secured, pipeline):
    # a depositor's work first: it makes the pipeline's bucket (which a viewer may not
    # either), so the viewer's deposit is refused at its publish
    work_id = deposit(secured, pipeline).stdout.strip()
    assert_denied(deposit(secured, pipeline, "viewer"), f"may not publish to wf.{pipeline}.")
    assert_denied(cli("cancel", work_id, env=role(secured, "viewer")), ".cancelled")


def test_a_viewer_can_read(secured):
    assert cli("ls", env=role(secured, "viewer")).returncode == 0
    assert cli("buckets", env=role(secured, "viewer")).returncode == 0


def test_a_depositor_cannot_cancel(secured, pipeline):
    work_id = deposit(secured, pipeline).stdout.strip()
    assert_denied(cli("cancel", work_id, env=role(secured, "depositor")), ".cancelled")


async def test_a_depositor_cannot_publish_an_outcome_event(secured, pipeline):
    work_id = deposit(secured, pipeline).stdout.strip()
    async with workflow.connect(secured[1], **credentials(secured, "depositor")) as client:
        head = await client.head(work_id)
        assert head is not None
        forged = ev.Succeeded(**client._connected.gateway.envelope(work_id, pipeline), attempt=1, results={"x": 1})
        with pytest.raises(PermissionDeniedError, match=rf"may not publish to wf\.{pipeline}\..*\.succeeded"):
            await client.append(forged, head.seq)


def test_a_depositor_cannot_run_a_worker(secured, pipeline):
    assert deposit(secured, pipeline).returncode == 0
    result = cli("run", pipeline, "--function", "workflow.examples.add", "--sleep", "1", "--lives", "1",
                 env=role(secured, "depositor"), timeout=60)
    assert_denied(result, "CONSUMER.MSG.NEXT")


def test_a_worker_cannot_deposit(secured, pipeline):
    assert_denied(deposit(secured, pipeline, "worker"), ".queued.")


def test_an_operator_can_requeue_and_cancel(secured, pipeline):
    work_id = deposit(secured, pipeline).stdout.strip()
    operator = role(secured, "operator")
    requeued = cli("requeue", work_id, "--priority", "5", env=operator)
    assert requeued.returncode == 0, requeued.stderr
    cancelled = cli("cancel", work_id, env=operator)
    assert cancelled.returncode == 0, cancelled.stderr


def test_no_credentials_give_a_clear_authorization_error(secured):
    result = cli("ls", env=clean_env(WORKFLOW_NATS_URL=secured[1]))
    assert result.returncode == PERMISSION_DENIED
    assert "authorization failed" in result.stderr and "no credentials" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_wrong_password_gives_a_clear_authorization_error(secured):
    env = {**role(secured, "worker"), "WORKFLOW_NATS_PASSWORD": "wrong"}
    result = cli("ls", env=env)
    assert result.returncode == PERMISSION_DENIED and "authorization failed for user 'worker'" in result.stderr


def test_a_worker_may_take_works_by_filter_and_heartbeat_its_claim(secured):
    """A filtered withdraw needs more than a bucket pull: the results service (to find
    candidates) and the claims' heartbeat bucket. The worker role allows both."""
    env = role(secured, "depositor")
    plain = cli("deposit", "secured-filter", "--function", "workflow.examples.add", "-P", "a=1", "-P", "b=2", env=env)
    tagged = cli("deposit", "secured-filter", "--function", "workflow.examples.add", "-P", "a=2", "-P", "b=2",
                 "--tag", "night", env=env)
    assert plain.returncode == 0 and tagged.returncode == 0, plain.stderr + tagged.stderr
    run = cli("run", "secured-filter", "--tag", "night", "--lives", "1", "--sleep", "1", env=role(secured, "worker"),
              timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "permission" not in run.stderr.lower(), run.stderr
    viewer = role(secured, "viewer")
    assert '"status":"success"' in cli("show", tagged.stdout.strip(), "--json", env=viewer).stdout.replace(" ", "")
    assert '"status":"queued"' in cli("show", plain.stdout.strip(), "--json", env=viewer).stdout.replace(" ", "")



async def test_a_worker_archives_products_a_viewer_gets_them_and_cannot_put_any(secured, tmp_path):
    from workflow.archive.objectstore import ObjectStoreStorage
    from workflow.archive.storage import Place
    from workflow.core.products import ArchiveError

    async with workflow.connect(secured[1], **credentials(secured, "depositor")) as depositor:
        [work_id] = await depositor.deposit(workflow.Work(
            pipeline="secured-products", function="workflow.examples.with_products", path=str(tmp_path),
            parameters={"name": "cand", "directory": str(tmp_path)}))
    run = cli("run", "secured-products", "--lives", "1", "--sleep", "1", env=role(secured, "worker"))
    assert run.returncode == 0, run.stdout + run.stderr
    got = cli("products", "get", work_id, "cand.dat", "--to", str(tmp_path / "viewer"), env=role(secured, "viewer"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "viewer" / "cand.dat").read_bytes() == (tmp_path / "cand.dat").read_bytes()
    forged = Place(work_id="forged", pipeline="p", attempt=1, kind="product", name="cand.dat", created=0.0)
    async with workflow.connect(secured[1], **credentials(secured, "viewer")) as viewer:
        with pytest.raises((ArchiveError, PermissionDeniedError)):
            await ObjectStoreStorage(viewer.nc, "PRODUCTS").put(tmp_path / "cand.dat", forged, limit=None)
    async with workflow.connect(secured[1], **credentials(secured, "worker")) as worker:
        assert await ObjectStoreStorage(worker.nc, "PRODUCTS").keys("forged/") == []


def test_an_operator_can_deploy_stop_and_remove_a_pipeline_configuration(secured, tmp_path):
    path = tmp_path / "chain.yaml"
    path.write_text("name: secured-chain\nsteps:\n  - {name: a, work: {pipeline: secured}}\n"
                    "  - {name: b, stage: 2, work: {pipeline: secured}}\n")  # b waits: a waiting deposit
    operator = role(secured, "operator")
    deployed = cli("configs", "deploy", str(path), "--json", env=operator)
    assert deployed.returncode == 0, deployed.stderr
    run = json.loads(deployed.stdout)["run"]
    stopped = cli("configs", "stop", "secured-chain", run, env=operator)
    assert stopped.returncode == 0, stopped.stderr
    removed = cli("configs", "rm", "secured-chain", env=operator)
    assert removed.returncode == 0, removed.stderr
    assert_denied(cli("configs", "deploy", str(path), env=role(secured, "depositor")), "_config")
