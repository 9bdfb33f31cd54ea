"""An option that takes one value, given twice, is refused (exit 2), never silently the last.

Click keeps the last value of a repeated single-valued option: ``workflow ls --user ann
--user bob`` listed bob's works only, without a word. Options that take several values
say so in their help (``-p``, ``-s``, ``-t``: "repeatable"); every other one may be given
once, and the app's group checks that before any command runs.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup


def repeated_option(command: Any, args: list[str]) -> tuple[str, str] | None:
    """The first single-valued option ``args`` give twice to ``command`` (or to the
    subcommand they name), as its two spellings; None when there is none. Unknown
    options and arguments are left to click."""
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        command = command.commands.get(args[0])
        if command is None:
            return None
        args = args[1:]
    options = {name: param for param in getattr(command, "params", ()) for name in (*param.opts, *param.secondary_opts)
               if name.startswith("-")}
    seen: dict[int, str] = {}
    index = 0
    while index < len(args):
        token = args[index]
        index += 1
        if token == "--":
            break
        name = token.split("=", 1)[0]
        param = options.get(name)
        if param is None:
            continue
        if not param.is_flag and not param.count and "=" not in token:
            index += 1  # its value, whatever it looks like (--port -1, --reason --user)
        if param.multiple or param.count:
            continue
        if id(param) in seen:
            return seen[id(param)], name
        seen[id(param)] = name
    return None


class RefusingRepeats(TyperGroup):
    """The ``workflow`` group: refuses a single-valued option given twice (see the module)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        resolved = super().resolve_command(ctx, args)
        _name, command, rest = resolved
        repeated = repeated_option(command, list(rest))
        if repeated is not None:
            first, second = repeated
            again = "twice" if first == second else f"as {first} and {second}"
            raise typer.BadParameter(f"given {again}; it takes one value (options marked repeatable take several)",
                                     ctx=ctx, param_hint=first)
        return resolved
