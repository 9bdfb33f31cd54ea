"""What every command prints, and how a failure becomes one line and an exit code.

Errors are one line on stderr, never a traceback, and the exit code says what kind of
failure it was (:data:`EXIT_CODES`): 1 for a refused operation, 2 for bad input, 3 when no
server is reachable or it stopped answering, 4 when NATS refused the login or the
operation (permissions), 130 for Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
import nats.errors
import typer
from rich import box
from rich.console import Console
from rich.table import Table

import workflow
from workflow.core.errors import (
    ConnectionFailedError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
    WorkflowError,
)
from workflow.log import eventloop

if TYPE_CHECKING:
    from workflow.cli.options import Connection

T = TypeVar("T")

# Piped output is read by people too (less, grep): don't squeeze tables into 80 columns.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200)
errors = Console(stderr=True, soft_wrap=True)


def _stopped_answering(error: BaseException) -> str:
    return (
        f"error: the NATS server stopped answering ({type(error).__name__}: {error}); "
        "nothing was lost: the log keeps what was recorded, try again when it is back"
    )


# The one table from a failure to its exit code and its line on stderr (None: say nothing).
# The first row whose types match wins, so subclasses come before their bases.
EXIT_CODES: tuple[tuple[tuple[type[BaseException], ...], int, Callable[[BaseException], str] | None], ...] = (
    ((ConnectionFailedError,), 3, lambda error: f"error: {error}"),
    ((ValidationError,), 2, lambda error: f"error: invalid {error}"),
    ((PermissionDeniedError,), 4, lambda error: f"error: {error}"),
    ((WorkflowError, NotFoundError), 1, lambda error: f"error: {error}"),
    ((nats.errors.Error, asyncio.TimeoutError), 3, _stopped_answering),
    ((KeyboardInterrupt,), 130, None),
)


def classify(error: BaseException) -> tuple[int, str | None] | None:
    """The exit code and the message for ``error``, or None for an error the table does
    not know (a bug: let its traceback show).

    A group of errors (a TaskGroup's) is its first error's line, when the table knows
    every error in it: forty refused writes are one refusal, never forty tracebacks.
    """
    if isinstance(error, BaseExceptionGroup):
        known = [classify(leaf) for leaf in error.exceptions]
        return known[0] if all(k is not None for k in known) else None
    for types, code, message in EXIT_CODES:
        if isinstance(error, types):
            return code, message(error) if message else None
    return None


def listing(*headers: str) -> Table:
    """A table of rows that stays readable in 80 columns: no vertical rules (two spaces
    between columns), and a cell too long for its column wraps onto a second line instead of
    being cut to ``sa…``."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def fail(message: str, code: int) -> typer.Exit:
    """Print ``error: message`` on stderr; returns the exit to raise."""
    errors.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(code)


@contextmanager
def reported() -> Iterator[None]:
    """Turn a known failure inside the block into its line on stderr and its exit code."""
    try:
        yield
    except (Exception, KeyboardInterrupt) as error:
        known = classify(error)
        if known is None:
            raise
        code, message = known
        if message:
            errors.print(message, markup=False, highlight=False)
        raise typer.Exit(code) from None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, with failures reported as :data:`EXIT_CODES` says."""
    with reported():
        return eventloop.run(coro)


def with_client(connection: Connection, action: Callable[[workflow.Client], Awaitable[T]]) -> T:
    """Connect, await ``action(client)``, disconnect: one command's work, run by :func:`run`."""

    async def go() -> T:
        async with workflow.connect(**connection.options()) as client:
            return await action(client)

    return run(go())


def print_json(data: Any) -> None:
    sys.stdout.write(msgspec.json.encode(data).decode() + "\n")


#: ``--log-format`` of the long-running commands (server, run, projector).
LogFormat = Annotated[str, typer.Option(
    "--log-format", help="text (for people) or json (one JSON object per line, for log collectors).")]

#: What every LogRecord has; anything else on a record came from ``extra={...}``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, then every field the call passed in ``extra`` (``work_id``,
    ``pipeline``, ``attempt``, …), and ``exception`` with the traceback if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in vars(record).items() if key not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level``: human-readable lines, or with ``log_format="json"``
    one JSON object per line (:class:`JsonFormatter`)."""
    if log_format not in ("text", "json"):
        raise fail(f"invalid --log-format: expected text or json, got {log_format!r}", 2)
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
