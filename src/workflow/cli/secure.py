"""``workflow secure init DIR``: a nats.conf whose users are workflow's roles, and their passwords.

NATS enforces the roles (:mod:`workflow.core.roles`): ``DIR/nats.conf`` is the
repository's nats.conf plus an ``authorization`` block, and ``DIR/<role>.env`` holds that
role's ``WORKFLOW_NATS_USER`` and ``WORKFLOW_NATS_PASSWORD`` (mode 0600), ready for
systemd's ``EnvironmentFile=`` or ``set -a; . DIR/worker.env``. ``workflow server --config
DIR/nats.conf`` starts the embedded server with it and logs in as ``server``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from workflow.cli.output import console, fail
from workflow.core.roles import ROLES, env_file, new_password, secured_conf
from workflow.log.resources import data_path

PRIVATE = 0o600


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable and writable by its owner only (also when it existed)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), PRIVATE)
        file.write(text)


def init(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Where to write nats.conf and <role>.env.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files (new passwords).")] = False,
) -> None:
    """Write DIR/nats.conf (the repository's settings and a user per role) and DIR/<role>.env
    for the roles server, depositor, worker, operator and viewer (random passwords, mode 0600).

    Then: workflow server --config DIR/nats.conf, and each process with its role's env file,
    e.g. `set -a; . DIR/worker.env; set +a; workflow run PIPELINE`.
    """
    targets = [directory / "nats.conf", *(directory / f"{role}.env" for role in ROLES)]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise fail(f"{', '.join(existing)} exist; --force writes new passwords over them", 1)
    directory.mkdir(parents=True, exist_ok=True)
    passwords = {role: new_password() for role in ROLES}
    _write_private(directory / "nats.conf", secured_conf(data_path("nats.conf").read_text(), passwords))
    for role, password in passwords.items():
        _write_private(directory / f"{role}.env", env_file(role, password))
    console.print(f"wrote {directory / 'nats.conf'} and {', '.join(f'{role}.env' for role in ROLES)} (mode 0600)")
    for name, described in ROLES.items():
        console.print(f"  {name:<10} {described.summary}", highlight=False)
    console.print(f"start the system with: workflow server --config {directory / 'nats.conf'}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``secure init`` to the CLI."""
    secure_app = typer.Typer(help="Roles enforced by NATS: users, passwords and permissions.", no_args_is_help=True)
    secure_app.command("init")(init)
    app.add_typer(secure_app, name="secure")
