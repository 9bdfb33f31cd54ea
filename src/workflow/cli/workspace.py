"""``workflow workspace set FILE|ls|show|unset``: the project's site configuration.

Workspaces are kept under ``~/.config/workflow/`` (``$XDG_CONFIG_HOME/workflow``):
``workspaces/<name>.yml`` for each one set, and ``workspace.yml``, the active one, which
``workflow run`` reads unless given ``--workspace FILE``. Each is checked when set (bad
YAML, an unknown field, a secret: refused with the field named).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from workflow.cli.output import console, fail, reported
from workflow.core.workspace import Workspace, parse


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/workflow``, else ``~/.config/workflow``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "workflow"


def active_path() -> Path:
    return config_dir() / "workspace.yml"


def load(path: Path) -> Workspace:
    """The workspace in ``path`` (checked)."""
    try:
        text = path.read_text()
    except OSError as error:
        from workflow.core.errors import ValidationError

        raise ValidationError("workspace", f"cannot read {path}: {error.strerror or error}") from None
    return parse(text)


def chosen(path: Path | None) -> Workspace | None:
    """``--workspace FILE`` if given, else the active workspace, else None."""
    if path is not None:
        return load(path)
    if active_path().exists():
        return load(active_path())
    return None


def set_(file: Annotated[Path, typer.Argument(metavar="FILE", help="The workspace YAML file.")]) -> None:
    """Check FILE, keep a copy under ~/.config/workflow/workspaces/ and make it the active workspace."""
    with reported():
        workspace = load(file)
    saved = config_dir() / "workspaces" / f"{workspace.name}.yml"
    saved.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, saved)
    shutil.copyfile(file, active_path())
    console.print(f"workspace {workspace.name} set (saved as {saved})", highlight=False)


def ls() -> None:
    """The workspaces set on this machine; the active one is marked with *."""
    active = load(active_path()).name if active_path().exists() else None
    for path in sorted((config_dir() / "workspaces").glob("*.yml")):
        console.print(f"{'*' if path.stem == active else ' '} {path.stem}", highlight=False)


WorkspaceName = Annotated[str | None, typer.Argument(help="A workspace set before [default: the active one].")]


def show(name: WorkspaceName = None) -> None:
    """Print a workspace (the active one by default)."""
    path = active_path() if name is None else config_dir() / "workspaces" / f"{name}.yml"
    if not path.exists():
        raise fail("no workspace is set (workflow workspace set FILE)" if name is None
                   else f"no workspace named {name} (workflow workspace ls)", 1)
    sys.stdout.write(path.read_text())  # as written: no wrapping, no markup


def unset() -> None:
    """Stop using the active workspace (the saved copies stay)."""
    if active_path().exists():
        active_path().unlink()
        console.print("workspace unset", highlight=False)
    else:
        console.print("no workspace was set", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``workspace set|ls|show|unset`` to the CLI."""
    workspace_app = typer.Typer(
        help="The project's site configuration: sites, NATS URLs, archive storages (YAML, no secrets).",
        no_args_is_help=True,
    )
    workspace_app.command("set")(set_)
    workspace_app.command("ls")(ls)
    workspace_app.command("show")(show)
    workspace_app.command("unset")(unset)
    app.add_typer(workspace_app, name="workspace")
