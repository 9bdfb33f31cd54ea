"""What each role may do in the JetStream API, and the trust holes of issue 19, against a real
nats-server secured by ``workflow secure init`` and run by ``workflow server --config``.

Every role but the server is asked every request of :data:`workflow.core.roles.JETSTREAM_ACTIONS`
(a table that covers each ``$JS.API`` subject nats-server answers); the server must refuse
exactly what the table says, and leave the buckets and streams as they were. The rest: a
new pipeline still gets its buckets (the server's bucket keeper), secrets are never printed,
nats.conf holds bcrypt hashes, ``--listen``, and refusals that come at once and say who,
what and where.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

import workflow
from workflow.core.errors import PermissionDeniedError
from workflow.core.ids import new_id
from workflow.core.roles import JETSTREAM_ACTIONS, ROLES, SAMPLE_BUCKET, actions_table, may_publish, parse_env
from workflow.core.settings import redacted
from workflow.core.subjects import BUCKET_REQUESTS, STREAM
from workflow.log import claimer_keys, connection
from workflow.log import schedules as schedule_log
from workflow.server import nats_server_binary, prepare_log

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]
PERMISSION_DENIED = 4
CLIENT_ROLES = ("depositor", "worker", "operator", "viewer")
SAMPLE_PIPELINE = "sample-pipeline"  # SAMPLE_BUCKET's: deposits at local, priority 3

#: Every subject the JetStream API of nats-server 2.11 to 2.15 answers (server/jetstream_api.go),
#: as its handlers subscribe to them. A newer server's new ones fail
#: test_the_installed_nats_server_answers_no_api_subject_the_list_lacks until they are added.
JETSTREAM_API = (
    "$JS.API.INFO",
    "$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.UPDATE.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.DELETE.*", "$JS.API.STREAM.PURGE.*", "$JS.API.STREAM.SNAPSHOT.*",
    "$JS.API.STREAM.RESTORE.*", "$JS.API.STREAM.MSG.DELETE.*", "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.STREAM.LEADER.STEPDOWN.*", "$JS.API.STREAM.PEER.REMOVE.*", "$JS.API.STREAM.PEER.EVACUATE.*",
    "$JS.API.STREAM.CANCEL_MOVE.*",
    "$JS.API.DIRECT.GET.*", "$JS.API.DIRECT.GET.*.>",
    "$JS.API.CONSUMER.CREATE.*", "$JS.API.CONSUMER.CREATE.*.>", "$JS.API.CONSUMER.DURABLE.CREATE.*.*",
    "$JS.API.CONSUMER.NAMES.*", "$JS.API.CONSUMER.LIST.*", "$JS.API.CONSUMER.INFO.*.*",
    "$JS.API.CONSUMER.DELETE.*.*", "$JS.API.CONSUMER.PAUSE.*.*", "$JS.API.CONSUMER.UNPIN.*.*",
    "$JS.API.CONSUMER.RESET.*.*", "$JS.API.CONSUMER.MSG.NEXT.*.*", "$JS.API.CONSUMER.LEADER.STEPDOWN.*.*",
    "$JS.API.CONSUMER.PEER.REMOVE.*.*", "$JS.API.CONSUMER.PEER.EVACUATE.*.*",
    "$JS.API.ACCOUNT.PURGE.*", "$JS.API.ACCOUNT.STREAM.MOVE.*.*", "$JS.API.ACCOUNT.STREAM.CANCEL_MOVE.*.*",
    "$JS.API.META.LEADER.STEPDOWN", "$JS.API.META.RESCUE", "$JS.API.SERVER.REMOVE", "$JS.API.SERVER.EVACUATE",
)


# -- a secured system ---------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workflow.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WORKFLOW_NATS_")}
    return {**env, **extra}


def start_server(directory: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log_path = directory / "server.log"
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "workflow.cli", "server", "--port", "-1", "--data-dir", str(directory / "data"),
             *args], env=env or clean_env(), stdout=log, stderr=subprocess.STDOUT)


def ready_url(directory: Path, server: subprocess.Popen[bytes]) -> str:
    log_path = directory / "server.log"
    deadline = time.monotonic() + 60
    while not (match := re.search(r"workflow server ready on (\S+)", log_path.read_text())):
        assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    return match.group(1)


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """``workflow secure init DIR`` and ``workflow server --config DIR/nats.conf``: (DIR, URL)."""
    directory = tmp_path_factory.mktemp("roles-jetstream")
    made = cli("secure", "init", str(directory / "roles"), env=clean_env())
    assert made.returncode == 0, made.stderr
    server = start_server(directory, "--config", str(directory / "roles" / "nats.conf"))
    try:
        yield directory / "roles", ready_url(directory, server)
    finally:
        stop(server)


def role_env(secured: tuple[Path, str], name: str) -> dict[str, str]:
    directory, url = secured
    return clean_env(WORKFLOW_NATS_URL=url, **parse_env((directory / f"{name}.env").read_text()))


def credentials(secured: tuple[Path, str], name: str) -> dict[str, str]:
    values = parse_env((secured[0] / f"{name}.env").read_text())
    return {"user": values["WORKFLOW_NATS_USER"], "password": values["WORKFLOW_NATS_PASSWORD"]}


def deposit(secured: tuple[Path, str], pipeline: str, name: str = "depositor", *more: str) -> str:
    result = cli("deposit", pipeline, "--function", "workflow.examples.add", "-P", "a=1", "-P", "b=2", *more,
                 env=role_env(secured, name))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def status_of(secured: tuple[Path, str], work_id: str) -> str:
    shown = cli("show", work_id, "--json", env=role_env(secured, "viewer"))
    assert shown.returncode == 0, shown.stderr
    return str(json.loads(shown.stdout)["status"])


class Refusals:
    """A raw connection's error callback: the subjects the server refused it, as it wrote them."""

    def __init__(self) -> None:
        self.subjects: set[str] = set()

    async def note(self, error: Exception) -> None:
        match = re.search(r"Permissions Violation for Publish to \"?([^\"']+)", str(error))
        if match:
            self.subjects.add(match.group(1).strip())


def changed_config(subject: str) -> bytes:
    """What a request that would rewrite a bucket carries: the lease cut to 1 s, one delivery."""
    config = {"durable_name": SAMPLE_BUCKET, "filter_subject": f"wf.{SAMPLE_PIPELINE}.*.queued.local.3",
              "ack_policy": "explicit", "ack_wait": 10**9, "max_deliver": 1, "deliver_policy": "all"}
    if ".MSG.NEXT." in subject:
        return b'{"batch":1,"no_wait":true}'
    return json.dumps({"stream_name": STREAM, "config": config}).encode()


async def server_view(secured: tuple[Path, str]) -> dict[str, object]:
    """What the server role sees of the bucket and the streams."""
    nc = await connection.connect(secured[1], **credentials(secured, "server"))
    try:
        seen: dict[str, object] = {}
        for name, subject in (("bucket", f"CONSUMER.INFO.{STREAM}.{SAMPLE_BUCKET}"),
                              ("intruder", f"CONSUMER.INFO.{STREAM}.intruder"),
                              ("log", f"STREAM.INFO.{STREAM}"), ("claims", f"STREAM.INFO.{claimer_keys.STREAM}"),
                              ("timers", f"STREAM.INFO.{schedule_log.TIMER_STREAM}")):
            reply = json.loads((await nc.request(f"$JS.API.{subject}", b"", timeout=10)).data)
            seen[name] = reply.get("config", reply.get("error"))
        return seen
    finally:
        await nc.close()


# -- item 1: only the server creates, updates or deletes streams and consumers -------------


@pytest.mark.parametrize("name", CLIENT_ROLES)
async def test_the_server_refuses_each_role_exactly_what_the_table_refuses(secured, name):
    """Each request of the table, as ``name``: a refused one is refused by the server (and
    changes nothing: the bucket keeps its lease and unbounded deliveries where the requests
    ask for 1 s and one delivery, the streams keep their config), an allowed one is answered."""
    deposit(secured, SAMPLE_PIPELINE)  # the bucket exists (local, priority 3)
    before = await server_view(secured)
    assert before["bucket"]["ack_wait"] != 10**9 and before["bucket"]["max_deliver"] == -1  # type: ignore[index]
    assert before["intruder"]["code"] == 404  # type: ignore[index]
    refusals = Refusals()
    nc = await connection.connect(secured[1], error_cb=refusals.note, **credentials(secured, name))
    answered: set[str] = set()
    try:
        inbox = nc.new_inbox()

        pull = next(i for i, action in enumerate(JETSTREAM_ACTIONS) if ".MSG.NEXT." in action.subject)

        async def on_reply(msg) -> None:  # a pulled work comes under its own subject
            answered.add(msg.subject.rsplit(".", 1)[1] if msg.subject.startswith(inbox) else str(pull))

        await nc.subscribe(f"{inbox}.*", cb=on_reply)
        for index, action in enumerate(JETSTREAM_ACTIONS):
            await nc.publish(action.subject, changed_config(action.subject), reply=f"{inbox}.{index}")
        await nc.flush()
        deadline = time.monotonic() + 20
        pending = set(range(len(JETSTREAM_ACTIONS)))
        while pending and time.monotonic() < deadline:
            pending = {i for i in pending
                       if JETSTREAM_ACTIONS[i].subject not in refusals.subjects and str(i) not in answered}
            await asyncio.sleep(0.05)
        assert not pending, [JETSTREAM_ACTIONS[i].subject for i in pending]
    finally:
        await nc.close()
    for index, action in enumerate(JETSTREAM_ACTIONS):
        refused = action.subject in refusals.subjects
        assert refused == (not may_publish(name, action.subject)), (name, action.subject)
        if refused:
            assert str(index) not in answered, action.subject
    after = await server_view(secured)
    assert after == before  # nothing was changed, deleted or paused


@pytest.mark.parametrize("name", ("depositor", "operator"))
def test_a_deposit_to_a_brand_new_pipeline_works_and_a_worker_runs_it(secured, name):
    """The bucket of a new pipeline is the server's to create: the depositing role asks for
    it, and a worker given the site (whose other priorities' buckets it asks for too) runs it."""
    pipeline = f"brand-new-{name}"
    work_id = deposit(secured, pipeline, name)
    run = cli("run", pipeline, "--site", "local", "--lives", "1", "--sleep", "1", env=role_env(secured, "worker"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert status_of(secured, work_id) == "success"


async def test_a_bucket_request_never_changes_an_existing_bucket(secured):
    deposit(secured, SAMPLE_PIPELINE)
    lease = (await server_view(secured))["bucket"]["ack_wait"]  # type: ignore[index]
    assert lease != 10**9
    nc = await connection.connect(secured[1], **credentials(secured, "depositor"))
    try:
        ask = {"pipeline": SAMPLE_PIPELINE, "site": "local", "priority": 3, "lease": 1}
        reply = json.loads((await nc.request(BUCKET_REQUESTS, json.dumps(ask).encode(), timeout=10)).data)
        assert reply["config"]["ack_wait"] == lease  # answered as it is, not cut to 1 s
        bad = json.loads((await nc.request(BUCKET_REQUESTS, b'{"pipeline":"a.b","site":"local","priority":3,'
                                           b'"lease":30}', timeout=10)).data)
        assert "invalid bucket request: pipeline" in bad["error"]["description"]
    finally:
        await nc.close()
    assert (await server_view(secured))["bucket"]["ack_wait"] == lease  # type: ignore[index]


# -- the roles table: the doc is the code's, and it covers the whole JetStream API ----------


def test_the_roles_doc_table_is_generated_from_the_roles():
    doc = (ROOT / "docs" / "howto" / "roles.md").read_text()
    generated = re.search(r"<!-- jetstream-actions: generated.*?-->\n(.*?)<!-- jetstream-actions: end -->", doc,
                          re.DOTALL)
    assert generated is not None and generated.group(1) == actions_table()


def test_the_table_covers_every_jetstream_api_subject_and_every_permission_a_role_holds():
    from workflow.core.roles import subject_matches

    subjects = [action.subject for action in JETSTREAM_ACTIONS]
    uncovered = [api for api in JETSTREAM_API if not any(subject_matches(api, subject) for subject in subjects)]
    assert not uncovered, uncovered
    assert schedule_log.TIMER_STREAM in " ".join(subjects) and claimer_keys.STREAM in " ".join(subjects)
    for name in CLIENT_ROLES:  # no JetStream permission beyond what the table asks
        for pattern in ROLES[name].publish:
            if pattern.startswith("$JS.API"):
                assert any(subject_matches(pattern, subject) for subject in subjects), (name, pattern)


def test_the_installed_nats_server_answers_no_api_subject_the_list_lacks():
    """The handlers' subjects written in the binary (``$JS.API.….*``): each one is in
    :data:`JETSTREAM_API`, so a newer server's new request cannot escape the roles' test."""
    binary = Path(nats_server_binary()).read_bytes()
    found = {m.decode() for m in re.findall(rb"\$JS\.API(?:\.[A-Z_]+)+(?:\.\*)+(?:\.>)?", binary)}
    assert len(found) > 20
    assert not found - set(JETSTREAM_API), sorted(found - set(JETSTREAM_API))


# -- item 2: no secret printed; the refused user named -------------------------------------


def test_a_wrong_password_in_the_url_is_never_printed_and_the_user_is_named(secured):
    port = secured[1].rsplit(":", 1)[1]
    result = cli("ls", "--nats", f"nats://viewer:WRONGPASS@127.0.0.1:{port}", env=clean_env())
    assert result.returncode == PERMISSION_DENIED, result.stderr
    assert "WRONGPASS" not in result.stdout + result.stderr
    assert "authorization failed for user 'viewer'" in result.stderr
    assert "no credentials" not in result.stderr and "nats://viewer:***@127.0.0.1" in result.stderr


def test_a_password_in_an_unreachable_url_is_never_printed():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for command in (("ls",), ("streams", "apply")):
        result = cli(*command, "--nats", f"nats://viewer:SECRET@127.0.0.1:{port}", env=clean_env())
        assert result.returncode == 3, result.stderr
        assert "SECRET" not in result.stdout + result.stderr and "viewer:***@" in result.stderr


def test_a_token_given_is_not_called_no_credentials(secured):
    result = cli("ls", "--nats", secured[1], "--nats-token", "NOT-A-TOKEN", env=clean_env())
    assert result.returncode == PERMISSION_DENIED, result.stderr
    assert "no credentials" not in result.stderr and "the token given" in result.stderr
    assert "NOT-A-TOKEN" not in result.stderr


def test_urls_are_redacted_before_they_are_shown():
    assert redacted("nats://viewer:pw@a:4222,tls://TOKEN@b:4222, nats://c") == \
        "nats://viewer:***@a:4222,tls://***@b:4222, nats://c"


# -- item 3: bcrypt hashes, a private directory ---------------------------------------------


def test_secure_init_writes_bcrypt_hashes_in_a_private_directory_whatever_the_umask(tmp_path, secured):
    directory = tmp_path / "a" / "roles"
    made = subprocess.run([sys.executable, "-m", "workflow.cli", "secure", "init", str(directory)],
                          env=clean_env(), capture_output=True, text=True, timeout=60, umask=0)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    config = (directory / "nats.conf").read_text()
    for name in ROLES:
        path = directory / f"{name}.env"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        password = parse_env(path.read_text())["WORKFLOW_NATS_PASSWORD"]
        assert password not in config
        hashed = re.search(rf'user: "{name}", password: "([^"]+)"', config)
        assert hashed is not None and hashed.group(1).startswith("$2")
        assert bcrypt.checkpw(password.encode(), hashed.group(1).encode())
    # and nats-server accepts them: the secured fixture's server logs every role in
    assert status_of(secured, deposit(secured, SAMPLE_PIPELINE)) == "queued"


# -- item 4: where the embedded server listens -------------------------------------------------


def this_hosts_address() -> str | None:
    """An address of this host that is not loopback (None if it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 1))  # no packet is sent: this only picks the route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def test_the_server_listens_on_loopback_unless_told_and_warns_about_tls(secured, tmp_path):
    port = int(secured[1].rsplit(":", 1)[1])
    address = this_hosts_address()
    if address is not None:
        assert not reachable(address, port)  # the default: this host only
    server = start_server(tmp_path, "--config", str(secured[0] / "nats.conf"), "--listen", "0.0.0.0")
    try:
        url = ready_url(tmp_path, server)
        log = (tmp_path / "server.log").read_text()
        assert "listening on 0.0.0.0:" in log and "without TLS" in log
        if address is not None:
            assert reachable(address, int(url.rsplit(":", 1)[1]))
    finally:
        stop(server)


# -- item 7: a server with the wrong credentials exits 4 at once ------------------------------


def test_a_server_with_a_wrong_password_or_another_roles_credentials_exits_4(secured, tmp_path):
    config = str(secured[0] / "nats.conf")
    (tmp_path / "wrong").mkdir()
    wrong = clean_env(WORKFLOW_NATS_USER="server", WORKFLOW_NATS_PASSWORD="NOT-THE-PASSWORD")
    server = start_server(tmp_path / "wrong", "--config", config, env=wrong)
    assert server.wait(60) == PERMISSION_DENIED, (tmp_path / "wrong" / "server.log").read_text()
    log = (tmp_path / "wrong" / "server.log").read_text()
    assert "authorization failed for user 'server'" in log and "NOT-THE-PASSWORD" not in log
    (tmp_path / "other").mkdir()
    other = clean_env(**parse_env((secured[0] / "depositor.env").read_text()))
    server = start_server(tmp_path / "other", "--config", config, env=other)
    assert server.wait(60) == PERMISSION_DENIED, (tmp_path / "other" / "server.log").read_text()
    log = (tmp_path / "other" / "server.log").read_text()
    assert "NATS user depositor may not publish to $JS.API.STREAM.NAMES" in log and "server role" in log


async def test_a_refused_server_login_is_reported_at_once(secured):
    started = time.monotonic()
    with pytest.raises(PermissionDeniedError, match="authorization failed for user 'server'"):
        await prepare_log(secured[1], user="server", password="wrong")
    assert time.monotonic() - started < 3  # nats-py alone: ~6 s of retries, then "no servers available"


# -- item 8: a refused worker at once, refusals that say what and keep the subject's case ----


async def test_a_refused_withdraw_fails_at_once_naming_the_action_and_the_subject(secured):
    deposit(secured, SAMPLE_PIPELINE)
    for name in ("viewer", "depositor"):
        async with workflow.connect(secured[1], **credentials(secured, name)) as client:
            started = time.monotonic()
            with pytest.raises(PermissionDeniedError) as refused:
                await client.withdraw(SAMPLE_PIPELINE, site="local", priority=3)
            assert time.monotonic() - started < 2.5, name  # not after the pull's 5 s timeout
            assert f"withdraw refused: NATS user {name} may not publish to" in str(refused.value)
            assert f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{SAMPLE_BUCKET}" in str(refused.value)


def test_a_refused_worker_process_stops_at_once_with_one_line(secured):
    deposit(secured, SAMPLE_PIPELINE)
    started = time.monotonic()
    run = cli("run", SAMPLE_PIPELINE, "--lives", "1", "--sleep", "1", env=role_env(secured, "viewer"))
    elapsed = time.monotonic() - started
    assert run.returncode == PERMISSION_DENIED, run.stdout + run.stderr
    # (a worker at a site first asks for its buckets, which a viewer may not either)
    assert re.search(r"withdraw refused: NATS user viewer may not publish to (workflow\.buckets\.create|"
                     r"\$JS\.API\.CONSUMER\.MSG\.NEXT\.WORKFLOW\.)", run.stderr), run.stderr
    assert "Traceback" not in run.stderr
    print(f"refused worker process: {elapsed:.1f} s")
    assert elapsed < 30, elapsed


async def test_a_refused_deposit_names_the_action_and_keeps_the_work_ids_case(secured):
    deposit(secured, SAMPLE_PIPELINE)  # its bucket exists: the refusal is the deposit's own
    work_id = new_id()
    assert work_id != work_id.lower()
    async with workflow.connect(secured[1], **credentials(secured, "viewer")) as client:
        work = workflow.Work(pipeline=SAMPLE_PIPELINE, id=work_id, site="local", priority=3,
                             function="workflow.examples.add")
        with pytest.raises(PermissionDeniedError) as refused:
            await client.deposit(work)
    assert (f"deposit refused: NATS user viewer may not publish to wf.{SAMPLE_PIPELINE}.{work_id}.queued.local.3"
            in str(refused.value))


async def test_without_a_server_to_ask_a_new_bucket_is_refused_saying_why(secured, tmp_path):
    """A bare nats-server with the roles and no ``workflow server``: nobody answers the bucket
    request, and the depositor may not create the bucket itself."""
    from workflow.server import EmbeddedNats

    with EmbeddedNats(tmp_path / "bare", port=-1, config=secured[0] / "nats.conf") as bare:
        await prepare_log(bare.url, **credentials(secured, "server"))
        async with workflow.connect(bare.url, **credentials(secured, "depositor")) as client:
            with pytest.raises(PermissionDeniedError, match=r"deposit refused: .*no `workflow server` answered"):
                await client.deposit(workflow.Work(pipeline="no-keeper", function="workflow.examples.add"))


async def test_the_server_fires_a_schedule_into_a_brand_new_pipeline(secured):
    """The server's own deposits (a schedule's firings) need a bucket too: it asks its
    keeper like any client, which the server role may."""
    pipeline = "brand-new-scheduled"
    async with workflow.connect(secured[1], **credentials(secured, "operator")) as operator:
        await operator.add_schedule("roles-tick", workflow.Work(pipeline=pipeline, function="workflow.examples.add"),
                                    every="1s")
        try:
            deadline = time.monotonic() + 30
            waiting = 0
            while waiting == 0 and time.monotonic() < deadline:
                waiting = sum(b.waiting for b in await operator.buckets() if b.pipeline == pipeline)
                await asyncio.sleep(0.2)
            assert waiting > 0
        finally:
            await operator.remove_schedule("roles-tick")
