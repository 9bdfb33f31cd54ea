"""``workflow secure init DIR``: a nats.conf whose users are workflow's roles, and their passwords.

NATS enforces the roles (:mod:`workflow.core.roles`): ``DIR/nats.conf`` is the
repository's nats.conf plus an ``authorization`` block with each role's bcrypt password
hash (a copy of the file, a backup, a config listing never shows a password), and
``DIR/<role>.env`` holds that role's ``WORKFLOW_NATS_USER`` and ``WORKFLOW_NATS_PASSWORD``
(mode 0600; DIR itself 0700 whatever the umask), ready for
systemd's ``EnvironmentFile=`` or ``set -a; . DIR/worker.env``. ``workflow server --config
DIR/nats.conf`` starts the embedded server with it and logs in as ``server``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated

import typer

from workflow.cli.output import console, fail, reported
from workflow.core.roles import ROLES, env_file, new_password, password_hash, secured_conf
from workflow.log.resources import data_path
from workflow.web.users import USERS_FILE, WEB_ROLES, load_users, user_line

PRIVATE = 0o600
PRIVATE_DIRECTORY = 0o700


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable and writable by its owner only (also when it existed)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), PRIVATE)
        file.write(text)


def _private_directory(directory: Path) -> None:
    """Create ``directory`` readable by its owner only (mode 0700: ``mkdir``'s mode goes
    through the umask, so it is set again after); an existing one is left as it is, with a
    warning if others may enter it."""
    if directory.exists():
        if stat.S_IMODE(directory.stat().st_mode) & 0o077:
            console.print(f"warning: {directory} is open to others (mode "
                          f"{stat.S_IMODE(directory.stat().st_mode):o}); its files are not (0600)", highlight=False)
        return
    directory.mkdir(parents=True, mode=PRIVATE_DIRECTORY)
    os.chmod(directory, PRIVATE_DIRECTORY)


def init(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Where to write nats.conf and <role>.env.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files (new passwords).")] = False,
) -> None:
    """Write DIR/nats.conf (the repository's settings and a user per role) and DIR/<role>.env
    for the roles server, depositor, worker, operator and viewer (random passwords, mode 0600).

    Then: workflow server --config DIR/nats.conf, and each process with its role's env file,
    e.g. `set -a; . DIR/worker.env; set +a; workflow run PIPELINE`.
    """
    targets = [directory / "nats.conf", *(directory / f"{role}.env" for role in ROLES), directory / USERS_FILE]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise fail(f"{', '.join(existing)} exist; --force writes new passwords over them", 1)
    _private_directory(directory)
    passwords = {role: new_password() for role in ROLES}
    hashes = {role: password_hash(password) for role, password in passwords.items()}
    _write_private(directory / "nats.conf", secured_conf(data_path("nats.conf").read_text(), hashes))
    for role, password in passwords.items():
        _write_private(directory / f"{role}.env", env_file(role, password))
    # The web UI's first users: the operator and the viewer, with their roles' passwords.
    _write_private(directory / USERS_FILE, "# name role bcrypt-hash: the web UI's users (`workflow secure web-user`)\n"
                   + "".join(user_line(role, role, hashes[role]) for role in WEB_ROLES))
    console.print(f"wrote {directory / 'nats.conf'} (bcrypt hashes of the passwords), "
                  f"{', '.join(f'{role}.env' for role in ROLES)} and {USERS_FILE} (mode 0600)")
    for name, described in ROLES.items():
        console.print(f"  {name:<10} {described.summary}", highlight=False)
    console.print(f"start the system with: workflow server --config {directory / 'nats.conf'}", highlight=False)


def web_user(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="The directory of `workflow secure init`.")],
    name: Annotated[str, typer.Argument(help="The person's name: the `by` of the events they write (web:NAME).")],
    role: Annotated[str, typer.Option("--role", help="viewer (look) or operator (look and act).")] = "viewer",
) -> None:
    """Add (or replace) a web UI user in DIR/web-users with a new random password, printed once."""
    path = directory / USERS_FILE
    if not path.exists():
        raise fail(f"{path} does not exist: run `workflow secure init {directory}` first", 1)
    with reported():
        user_line(name, role, "$2b$")  # checks the name and the role before anything is written
        users = load_users(path)
    password = new_password()
    users.pop(name, None)
    lines = [user_line(u.name, u.role, u.password_hash) for u in users.values()]
    _write_private(path, "# name role bcrypt-hash: the web UI's users (`workflow secure web-user`)\n"
                   + "".join(lines) + user_line(name, role, password_hash(password)))
    console.print(f"web user {name} ({role}) in {path}; password (shown once): {password}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``secure init`` to the CLI."""
    secure_app = typer.Typer(help="Roles enforced by NATS: users, passwords and permissions.", no_args_is_help=True)
    secure_app.command("init")(init)
    secure_app.command("web-user")(web_user)
    app.add_typer(secure_app, name="secure")
