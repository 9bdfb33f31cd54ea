"""What a worker runs for a work, and the rule that turns what it returned into an outcome.

A work names a Python *function* (a dotted path, called as ``function(**parameters)``,
or ``function(work)`` with ``workflow run --argsource work``; a ``click`` command gets the
parameters as its arguments, see :mod:`workflow.worker.clicks`) or a *command* (an argv
run as a subprocess). Both end in one :class:`Outcome`, a plain
msgspec Struct that crosses process boundaries as JSON, so a child process reports the
same thing a thread would.

The return-value rule (the CHIME/FRB pipeline interface, kept for our users):

- a ``dict`` is the results;
- a ``tuple`` gives the results and output files: its first dict is the results, its
  first list the products, its second list the plots (paths; ``Path`` objects become
  strings);
- ``None`` gives no results;
- anything else (the seed's ``add`` returns an ``int``) is kept as ``{"value": x}``, so
  a scalar answer is never lost.

Results must be JSON: numpy-like scalars and arrays (anything with ``.tolist()``),
paths and sets are converted; any other object fails the attempt with a clear error
instead of being silently turned into a string.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import os
import sys
import traceback as tb
from collections.abc import Callable
from typing import Any

import msgspec

from workflow.core.errors import UnknownFunctionError
from workflow.core.work import Work
from workflow.worker.outcome import Outcome, clip, jsonable, normalize, paths

#: Each of a command's stdout and stderr is kept up to this many bytes (the tail: where
#: errors are); what was cut is counted in ``stdout_truncated_bytes``, never hidden.
MAX_OUTPUT_BYTES = 1 << 20


#: What a function receives: the work's parameters as keyword arguments, or the whole Work.
ARGSOURCES = ("parameters", "work")


class FunctionCall(msgspec.Struct, frozen=True, kw_only=True):
    """Call ``function(**parameters)``, or ``function(work)`` when ``work`` is given
    (``--argsource work``); ``path`` is the work's working directory."""

    function: str
    parameters: dict[str, Any] = {}
    path: str = "."
    work: Work | None = None


class CommandCall(msgspec.Struct, frozen=True, kw_only=True):
    """Run ``argv`` as a subprocess in ``path``, with ``env`` added to the environment."""

    argv: list[str]
    path: str = "."
    env: dict[str, str] = {}


def resolve(dotted: str) -> Callable[..., Any]:
    """The callable at ``module.function`` (or ``module.Class.method``).

    Raises UnknownFunctionError, naming the path, when it cannot be imported.
    """
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            target: object = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and (module_name == error.name or module_name.startswith(error.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise UnknownFunctionError(f"cannot import {dotted}: {error}") from None
        except Exception as error:
            raise UnknownFunctionError(
                f"cannot import {dotted}: importing {module_name} raised {type(error).__name__}: {error}"
            ) from None
        try:
            for name in parts[split:]:
                target = getattr(target, name)
        except AttributeError:
            missing = ".".join(parts[split:])
            raise UnknownFunctionError(f"cannot import {dotted}: {module_name} has no {missing}") from None
        if not callable(target):
            raise UnknownFunctionError(f"{dotted} is not callable (it is a {type(target).__name__})")
        return target
    raise UnknownFunctionError(f"cannot import {dotted}: no module {parts[0]!r} on the Python path")


def call_function(call: FunctionCall) -> Outcome:
    """Resolve and call the function, and turn what happens into an Outcome.

    Runs wherever the isolation puts it (a child process, a thread, the main thread).
    Async functions run to completion in their own event loop. Exceptions (including
    ``SystemExit``) become a failed Outcome with the error and traceback; other
    BaseExceptions (the worker interrupting the call) propagate.
    """
    try:
        function = resolve(call.function)
    except UnknownFunctionError as error:
        return Outcome(status="unrunnable", error=str(error))
    if is_click_command(function):
        if call.work is not None:
            return Outcome(status="unrunnable", error=f"{call.function} is a click command: it takes the work's "
                           "parameters as its arguments, not the whole work (--argsource work)")
        from workflow.worker.clicks import call_click  # only where click is in use

        return call_click(function, call.function, call.parameters)
    misfit = _parameters_misfit(function, call)
    if misfit is not None:
        return Outcome(status="unrunnable", error=misfit)
    try:
        value = function(call.work) if call.work is not None else function(**call.parameters)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        results, products, plots = returned_work(value) if isinstance(value, Work) else normalize(value)
    except (Exception, SystemExit) as error:
        return Outcome(
            status="failed",
            error=clip(f"{type(error).__name__}: {error}"),
            traceback=clip(tb.format_exc()),
        )
    return Outcome(status="succeeded", results=results, products=products, plots=plots)


def is_click_command(function: object) -> bool:
    """Whether ``function`` is a ``click.Command``, recognised through ``sys.modules``: a
    click command was imported with click, so the worker never imports click itself."""
    click = sys.modules.get("click")
    command_type = getattr(click, "Command", None)
    return isinstance(command_type, type) and isinstance(function, command_type)


def returned_work(work: Work) -> tuple[dict[str, Any] | None, list[str] | None, list[str] | None]:
    """(results, products, plots) of a Work a function returned (``--argsource work``): the
    ones it set on it; its other fields are the system's to change, not the function's."""
    results = jsonable(work.results) if work.results is not None else None
    products = paths(work.products) if work.products is not None else None
    plots = paths(work.plots) if work.plots is not None else None
    return results, products, plots


def _parameters_misfit(function: Callable[..., Any], call: FunctionCall) -> str | None:
    """Why ``function(**parameters)`` cannot even be called, or None.

    Wrong parameters fail the same way at every attempt, so they are unrunnable (no
    retry), unlike a TypeError raised inside the function, which is an ordinary error.
    """
    signature = _signature(function)
    if signature is None:  # some builtins have no signature: just call them
        return None
    try:
        if call.work is not None:
            signature.bind(call.work)
        else:
            signature.bind(**call.parameters)
    except TypeError as error:
        bare = signature.replace(
            parameters=[p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()],
            return_annotation=inspect.Signature.empty,
        )
        return f"the work's parameters do not fit {call.function}{bare}: {error}"
    return None


def _signature(function: Callable[..., Any]) -> inspect.Signature | None:
    """``function``'s signature (None if it has none), remembered: reading it took 25 µs,
    half of a no-op call, at every work a warm child or a thread runs."""
    try:
        return _remembered_signature(function)
    except TypeError:  # an unhashable callable object: read it each time
        return _read_signature(function)


def _read_signature(function: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


_remembered_signature = functools.lru_cache(maxsize=1024)(_read_signature)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def command_results(argv: list[str], returncode: int, stdout: bytes, stderr: bytes) -> dict[str, Any]:
    """A command's results: its argv, return code, and (the tail of) its output as text."""
    results: dict[str, Any] = {"command": argv, "returncode": returncode}
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        if len(data) > MAX_OUTPUT_BYTES:
            results[f"{name}_truncated_bytes"] = len(data) - MAX_OUTPUT_BYTES
            data = data[-MAX_OUTPUT_BYTES:]
        results[name] = data.decode(errors="replace")
    return results


def command_outcome(argv: list[str], returncode: int, stdout: bytes, stderr: bytes) -> Outcome:
    """Exit code 0 succeeds; anything else fails, with the output kept in the results."""
    results = command_results(argv, returncode, stdout, stderr)
    if returncode == 0:
        return Outcome(status="succeeded", results=results)
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
    return Outcome(status="failed", results=results, error=f"command {how}")


def work_environment(work_id: str, pipeline: str, attempt: int, parameters: dict[str, Any] | None) -> dict[str, str]:
    """What a command learns about its work, in the environment (parameters as JSON)."""
    return {
        "WORKFLOW_WORK_ID": work_id,
        "WORKFLOW_PIPELINE": pipeline,
        "WORKFLOW_ATTEMPT": str(attempt),
        "WORKFLOW_PARAMETERS": msgspec.json.encode(parameters or {}).decode(),
    }


def environment_with(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}
