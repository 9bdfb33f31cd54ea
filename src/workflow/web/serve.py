"""Running the web UI: uvicorn in this process's event loop, until ``stop`` is set.

Used by ``workflow web`` (standalone, any NATS) and ``workflow server --web-port N``
(embedded, next to the projector). Without web users the UI has no login, and so it
listens on the loopback address only: :func:`check_binding` refuses anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from workflow.core.errors import ValidationError
from workflow.core.settings import is_loopback  # the same rule as the embedded nats-server's --listen
from workflow.web.app import WebSettings, create_app
from workflow.web.backend import Backend
from workflow.web.users import USERS_FILE, WebUser, load_users

log = logging.getLogger("workflow.web")


def check_binding(host: str, users: dict[str, WebUser] | None) -> None:
    """Refuse to serve without login beyond this host."""
    if users is None and not is_loopback(host):
        raise ValidationError("host", f"without web users the UI has no login, so it listens on 127.0.0.1 only, "
                              f"not {host}: give it users (`workflow secure init DIR`, then --secure DIR)")


def users_of(secure_dir: Path | None) -> dict[str, WebUser] | None:
    """The web users of ``workflow secure init DIR`` (None without DIR)."""
    if secure_dir is None:
        return None
    path = secure_dir / USERS_FILE
    if not path.exists():
        raise ValidationError("secure", f"{path} does not exist: `workflow secure init {secure_dir}` writes it")
    users = load_users(path)
    if not users:
        raise ValidationError("secure", f"{path} has no users: add one with `workflow secure web-user`")
    return users


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as error:
        sock.close()
        raise ValidationError("web-port", f"the web UI cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the command that runs it owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_web(connect_options: dict[str, Any], stop: asyncio.Event, *, host: str = "127.0.0.1",
                    port: int = 8080, users: dict[str, WebUser] | None = None, local_user: str = "local") -> None:
    """Serve the UI on ``host:port`` (0: any free port, printed) until ``stop`` is set."""
    check_binding(host, users)
    app = create_app(Backend(connect_options), WebSettings(users=users, local_user=local_user))
    sock = _bound_socket(host, port)  # bound here: a port in use is an error of ours, not uvicorn's sys.exit
    bound = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="web")
    try:
        while not server.started:
            if task.done():
                await task
                raise ValidationError("web", f"the web UI did not start on {host}:{port}")
            await asyncio.sleep(0.02)
        shown = f"[{host}]" if ":" in host else host
        login = "log in with a web user" if users is not None else "no login: this host only"
        print(f"workflow web UI on http://{shown}:{bound}/ ({login})", flush=True)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
