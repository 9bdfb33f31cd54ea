"""MkDocs hook: the command-line reference (``reference/cli.md``), generated at build time
from the Typer app itself, so the page can never drift from ``workflow --help``.

Why a hook and not mkdocs-click: Typer (0.20 and later) carries its own copy of click
(``typer._click``), so its commands are no longer ``click.Command`` objects and
mkdocs-click cannot read them; and a hook is one plugin less to install. The page shows
what a reader looks for, in a table (every option with its type, default and environment
variable), read from the command objects ``typer.main.get_command(app)`` returns.
"""

from __future__ import annotations

from typing import Any

import typer
from mkdocs.structure.files import File, Files

PAGE = "reference/cli.md"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _names(param: Any) -> str:
    if param.param_type_name == "argument":
        return f"`{(param.metavar or param.name or '').upper()}`"
    names = [*param.opts, *param.secondary_opts]
    return " / ".join(f"`{name}`" for name in names)


def _default(param: Any) -> str:
    if param.required:
        return "required"
    default = param.default
    if default is None or default == () or callable(default):
        return ""
    if param.param_type_name == "option" and param.is_flag and param.secondary_opts:
        return f"`{param.opts[0] if default else param.secondary_opts[0]}`"
    return f"`{default}`"


def _rows(command: Any, context: Any) -> list[str]:
    rows = ["| option | type | default | environment | what |", "| --- | --- | --- | --- | --- |"]
    for param in command.get_params(context):
        if getattr(param, "hidden", False) or param.name in ("install_completion", "show_completion"):
            continue
        envvar = getattr(param, "envvar", None)
        envvar = envvar if isinstance(envvar, str) else ", ".join(envvar or ())
        flag = param.param_type_name == "option" and param.is_flag
        kind = "flag" if flag else param.display_type(context).strip("<>")
        rows.append(
            f"| {_names(param)} | {_cell(kind)} | {_cell(_default(param))} | "
            f"{'`' + envvar + '`' if envvar else ''} | {_cell(getattr(param, 'help', None) or '')} |"
        )
    return rows


def _section(command: Any, path: list[str], parent: Any) -> list[str]:
    context = command.context_class(command, info_name=path[-1], parent=parent)
    name = " ".join(path)
    lines: list[str] = []
    if len(path) > 1:
        lines += [f"## `{name}`", ""]
    usage = " ".join(command.collect_usage_pieces(context))
    lines += ["```text", f"{name} {usage}".rstrip(), "```", ""]
    if command.help:
        lines += [command.help.replace("\b\n", "").strip(), ""]
    if not hasattr(command, "list_commands"):  # a command, not a group
        lines += [*_rows(command, context), ""]
        return lines
    for sub_name in command.list_commands(context):
        sub = command.get_command(context, sub_name)
        if sub is not None and not sub.hidden:
            lines += _section(sub, [*path, sub_name], context)
    return lines


def markdown() -> str:
    """The whole reference page."""
    from workflow.cli.app import build

    root = typer.main.get_command(build())
    intro = [
        "# Command line",
        "",
        "Generated from the `workflow` command itself when the site is built; "
        "`workflow COMMAND --help` shows the same.",
        "",
    ]
    return "\n".join(intro + _section(root, ["workflow"], None)) + "\n"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, PAGE, content=markdown()))
    return files
