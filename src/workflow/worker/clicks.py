"""Click commands as work functions: the work's parameters become the command's arguments.

Many CHIME/FRB entry points are ``click`` commands; the old system ran them as they are,
and so does this worker. When the function a work names is a ``click.Command``, each of
the work's parameters, named as the command's Python parameter (``param.name``), becomes
command-line text:

- an option: ``--name VALUE`` (a list for an option with ``nargs > 1`` gives its values);
- a ``multiple`` option: one ``--name VALUE`` per item of a list;
- a flag: ``--name`` when true; its ``--no-name`` (if it has one) when false, else nothing;
- a counting option (``count=True``): the option repeated that many times;
- an argument: its value in order, after ``--`` (a list for ``nargs != 1``).

A parameter left out takes the command's own default, exactly as on a shell. The command
is then parsed and invoked through its own methods (``make_context``, ``invoke``), so its
types, callbacks and checks run as on the command line, in whatever isolation the worker
uses. Its return value is the results (the usual rule of :mod:`workflow.worker.runner`);
``ctx.exit(code)`` and ``sys.exit(code)`` succeed with code 0 and fail with any other; a
``click.ClickException`` (``UsageError``, ``BadParameter``...) raised inside it fails the
attempt with its message. Parameters the command cannot parse (an unknown name, a bad
value) make the work *unrunnable*, as wrong parameters of a plain function do: they fail
the same way at every attempt.

Click is the user's dependency, not ours: a command is recognised through
``sys.modules["click"]``, which is there whenever a click command was imported, so the
worker never imports click itself.
"""

from __future__ import annotations

import sys
import traceback as tb
from typing import Any

import msgspec

from workflow.worker.outcome import Outcome, clip, normalize


class ArgumentsError(ValueError):
    """The work's parameters cannot be written as the command's arguments."""


def _text(value: Any) -> str:
    """One command-line value: strings as they are, lists and dicts as JSON, the rest str()."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return msgspec.json.encode(value).decode()
    return str(value)


def _items(name: str, value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise ArgumentsError(f"parameter {name!r} takes several values: expected a list, got {value!r}")
    return list(value)


def _option_arguments(option: Any, value: Any) -> list[str]:
    """The command-line text of one click Option given the work's ``value``."""
    long_names = [name for name in option.opts if name.startswith("--")]
    flag = (long_names or option.opts)[0]
    if option.count:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ArgumentsError(f"parameter {option.name!r} counts: expected a whole number >= 0, got {value!r}")
        return [flag] * value
    if option.is_flag:
        if not isinstance(value, bool):
            raise ArgumentsError(f"parameter {option.name!r} is a flag: expected true or false, got {value!r}")
        if value:
            return [flag]
        return [option.secondary_opts[0]] if option.secondary_opts else []
    values = _items(option.name, value) if option.multiple else [value]
    arguments: list[str] = []
    for item in values:
        parts = _items(option.name, item) if option.nargs != 1 else [item]
        arguments += [flag, *(_text(part) for part in parts)]
    return arguments


def arguments_for(command: Any, parameters: dict[str, Any]) -> list[str]:
    """The argv that gives ``command`` the work's ``parameters`` (see the module's rule).

    Raises ArgumentsError naming the parameters the command does not take.
    """
    click = sys.modules["click"]
    by_name = {param.name: param for param in command.params if param.name}
    unknown = sorted(set(parameters) - set(by_name))
    if unknown:
        raise ArgumentsError(
            f"the command has no parameter {', '.join(map(repr, unknown))}; it takes {', '.join(sorted(by_name))}"
        )
    options: list[str] = []
    positional: list[str] = []
    for param in command.params:
        if param.name not in parameters or parameters[param.name] is None:
            continue  # its default, as on a shell
        value = parameters[param.name]
        if isinstance(param, click.Argument):
            values = _items(param.name, value) if param.nargs != 1 else [value]
            positional += [_text(item) for item in values]
        else:
            options += _option_arguments(param, value)
    return [*options, "--", *positional] if positional else options


def call_click(command: Any, function: str, parameters: dict[str, Any]) -> Outcome:
    """Parse the work's parameters as ``command``'s arguments and invoke it."""
    click = sys.modules["click"]
    try:
        argv = arguments_for(command, parameters)
    except ArgumentsError as error:
        return Outcome(status="unrunnable", error=f"the work's parameters do not fit the click command {function}: "
                       f"{error}")
    try:
        context = command.make_context(command.name or function, argv)
    except click.exceptions.Exit as done:  # --help and eager options end parsing
        return _exited(done.exit_code)
    except click.ClickException as error:
        return Outcome(status="unrunnable", error=clip(
            f"the work's parameters do not fit the click command {function} ({' '.join(argv)}): "
            f"{error.format_message()}"))
    try:
        with context:
            value = command.invoke(context)
        results, products, plots = normalize(value)
    except click.exceptions.Exit as done:
        return _exited(done.exit_code)
    except SystemExit as done:
        return _exited(done.code)
    except click.ClickException as error:
        return Outcome(status="failed", error=clip(f"{type(error).__name__}: {error.format_message()}"),
                       traceback=clip(tb.format_exc()))
    except Exception as error:
        return Outcome(status="failed", error=clip(f"{type(error).__name__}: {error}"),
                       traceback=clip(tb.format_exc()))
    return Outcome(status="succeeded", results=results, products=products, plots=plots)


def _exited(code: object) -> Outcome:
    """A command's exit: code 0 (or None) succeeds, anything else fails naming it."""
    if code in (0, None):
        return Outcome(status="succeeded")
    return Outcome(status="failed", error=f"the click command exited with code {code}")
