"""Options shared by several commands, declared once.

A group of options is a frozen dataclass whose fields carry their ``typer.Option``;
:func:`option_group` adds the fields to a command's signature (so typer and ``--help`` see
them) and hands the command one instance of the dataclass instead. So every command
that talks to NATS says ``connection: Connection`` and gets ``--nats``, ``--nats-user``,
… with their environment variables, and ``ls`` and ``count`` share their filters.

The connection options all start with ``--nats``: a command's own options (a work's
``--user``, ``--site``, …) can never be taken for a login.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import typer

from workflow.core.filters import WorkFilter
from workflow.core.settings import redacted
from workflow.core.status import LOGGED
from workflow.log.tls import tls_context

R = TypeVar("R")
CONNECTION_PANEL = "NATS connection"

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]
MetricsPort = Annotated[int | None, typer.Option(
    "--metrics-port", help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port).")]
MetricsHost = Annotated[str, typer.Option("--metrics-host", help="With --metrics-port: the address to listen on.")]
Fresh = Annotated[bool, typer.Option(
    "--fresh/--no-fresh",
    help="Wait until the projection holds every event logged so far, so you see your own writes; "
         "--no-fresh answers at once from what it holds.",
)]


@dataclasses.dataclass(frozen=True)
class Connection:
    """How to reach NATS: ``--nats URL`` and its credentials (each also from the environment)."""

    url: Annotated[str | None, typer.Option(
        "--nats", envvar="WORKFLOW_NATS_URL", rich_help_panel=CONNECTION_PANEL,
        help="NATS server URL [default: nats://127.0.0.1:4222].")] = None
    user: Annotated[str | None, typer.Option(
        "--nats-user", envvar="WORKFLOW_NATS_USER", rich_help_panel=CONNECTION_PANEL, help="NATS user name.")] = None
    password: Annotated[str | None, typer.Option(
        "--nats-password", envvar="WORKFLOW_NATS_PASSWORD", rich_help_panel=CONNECTION_PANEL,
        help="NATS password.")] = None
    token: Annotated[str | None, typer.Option(
        "--nats-token", envvar="WORKFLOW_NATS_TOKEN", rich_help_panel=CONNECTION_PANEL, help="NATS auth token.")] = None
    creds: Annotated[Path | None, typer.Option(
        "--nats-creds", envvar="WORKFLOW_NATS_CREDS", rich_help_panel=CONNECTION_PANEL,
        help="NATS credentials file.")] = None
    nkey: Annotated[Path | None, typer.Option(
        "--nats-nkey", envvar="WORKFLOW_NATS_NKEY", rich_help_panel=CONNECTION_PANEL,
        help="NATS nkey seed file.")] = None
    tls_ca: Annotated[Path | None, typer.Option(
        "--nats-tls-ca", envvar="WORKFLOW_NATS_TLS_CA", rich_help_panel=CONNECTION_PANEL,
        help="CA bundle to verify the server.")] = None
    tls_cert: Annotated[Path | None, typer.Option(
        "--nats-tls-cert", envvar="WORKFLOW_NATS_TLS_CERT", rich_help_panel=CONNECTION_PANEL,
        help="Client certificate (PEM), for a server that verifies clients.")] = None
    tls_key: Annotated[Path | None, typer.Option(
        "--nats-tls-key", envvar="WORKFLOW_NATS_TLS_KEY", rich_help_panel=CONNECTION_PANEL,
        help="Private key of --nats-tls-cert (PEM).")] = None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``workflow.connect`` (``url`` first, None for the default)."""
        options: dict[str, Any] = {"url": self.url}
        if self.user:
            options["user"] = self.user
        if self.password:
            options["password"] = self.password
        if self.token:
            options["token"] = self.token
        if self.creds:
            options["user_credentials"] = str(self.creds)
        if self.nkey:
            options["nkeys_seed"] = str(self.nkey)
        if self.tls_ca or self.tls_cert or self.tls_key:
            options["tls"] = tls_context(self.tls_ca, self.tls_cert, self.tls_key)
        return options

    #: Fields handed to a child process through its environment, never its command line
    #: (which ``ps`` shows to every user of the host).
    SECRETS: ClassVar[tuple[str, ...]] = ("password", "token")

    def argv(self) -> list[str]:
        """The command-line options that give another ``workflow`` command this connection,
        secrets excepted (see :meth:`secret_environment`)."""
        argv: list[str] = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value and field.name not in self.SECRETS and not (field.name == "url" and self._url_has_secret()):
                argv += [option_name(Connection, field.name), str(value)]
        return argv

    def secret_environment(self) -> dict[str, str]:
        """The secrets as the environment variables their options read (``WORKFLOW_NATS_PASSWORD``…),
        and a URL that carries a password or token (``nats://user:pw@host``) as ``WORKFLOW_NATS_URL``."""
        found = {
            f"WORKFLOW_NATS_{name.upper()}": str(getattr(self, name)) for name in self.SECRETS if getattr(self, name)
        }
        if self.url and self._url_has_secret():
            found["WORKFLOW_NATS_URL"] = self.url
        return found

    def _url_has_secret(self) -> bool:
        return bool(self.url) and redacted(str(self.url)) != str(self.url)


@dataclasses.dataclass(frozen=True)
class WorkFilters:
    """Which works ``ls`` and ``count`` look at: every filter given must match; a repeated
    one matches any of its values (``-p a -p b``), as the bulk commands' filters do.

    Each field is named as the core's :class:`~workflow.core.filters.WorkFilter` field it
    gives (its option may read otherwise: ``--run`` is ``parent``), so :func:`as_filter`
    is the one conversion."""

    pipeline: Annotated[list[str] | None, typer.Option(
        "--pipeline", "-p", help="Only this pipeline (repeatable: any).")] = None
    status: Annotated[list[str] | None, typer.Option(
        "--status", "-s", help=f"Only this status (repeatable: any): {', '.join(LOGGED)}.")] = None
    site: Annotated[list[str] | None, typer.Option("--site", help="Only this site (repeatable: any).")] = None
    user: Annotated[str | None, typer.Option("--user", help="Only works of this user.")] = None
    tags: Annotated[list[str] | None, typer.Option(
        "--tag", "-t", help="Only works with this tag (repeatable: all of them).")] = None
    event: Annotated[list[int] | None, typer.Option(
        "--event", "-e", help="Only works naming this telescope event (repeatable: any).")] = None
    since: Annotated[str | None, typer.Option("--since", help="Created at or after this ISO time.")] = None
    until: Annotated[str | None, typer.Option("--until", help="Created before this ISO time.")] = None
    include_deleted: Annotated[bool, typer.Option(
        "--include-deleted", help="Deleted works too (hidden unless asked, or --status deleted).")] = False
    parent: Annotated[str | None, typer.Option(
        "--run", help="Only the works of this configuration run (its id: `workflow configs ps NAME`).")] = None


def as_filter(options: Any) -> WorkFilter:
    """A dataclass of filter options (``WorkFilters``, the bulk commands' ``Selection``) as
    the core's WorkFilter, checked (ValidationError with the Work field's message). Its
    fields bear the filter's names; one that does not is refused by name."""
    return WorkFilter.of(**{field.name: getattr(options, field.name) for field in dataclasses.fields(options)})


def option_name(group: type, field: str) -> str:
    """The first (long) option name of ``group``'s ``field``, e.g. ``--nats-user``."""
    hints = typing.get_type_hints(group, include_extras=True)
    for extra in getattr(hints[field], "__metadata__", ()):
        if isinstance(extra, typer.models.OptionInfo):  # in Annotated, the first name is held as `default`
            declared = (extra.default, *(extra.param_decls or ()))
            return next(name for name in declared if isinstance(name, str) and name.startswith("--"))
    raise LookupError(f"{group.__name__}.{field} declares no option")


def option_group(group: type, into: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """A decorator: the command's keyword-only parameter ``into`` becomes the fields of the
    dataclass ``group`` on the command line (in its place, so ``--help`` lists them there),
    and the command is called with one ``group`` instance.

    The added parameters are named ``{into}__{field}``, so they never clash with the
    command's own parameters; each field must declare its option's ``--name``.
    """
    hints = typing.get_type_hints(group, include_extras=True)
    fields = dataclasses.fields(group)
    for f in fields:  # else typer would name the option after the parameter: --{into}--{field}
        option_name(group, f.name)
    added = [
        inspect.Parameter(f"{into}__{f.name}", inspect.Parameter.KEYWORD_ONLY, default=f.default,
                          annotation=hints[f.name])
        for f in fields
    ]

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        signature = inspect.signature(command, eval_str=True)
        receiver = signature.parameters.get(into)
        if receiver is None or receiver.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{command.__name__} has no keyword-only parameter {into!r} to receive {group.__name__}")

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> R:
            values = {f.name: kwargs.pop(f"{into}__{f.name}", f.default) for f in fields}
            return command(*args, **kwargs, **{into: group(**values)})

        parameters = [new for p in signature.parameters.values() for new in (added if p is receiver else [p])]
        wrapper.__dict__["__signature__"] = signature.replace(parameters=parameters)  # what inspect and typer read
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


connection_options = option_group(Connection, "connection")
"""Give a command ``--nats`` and the NATS credentials, as ``connection: Connection``."""

work_filters = option_group(WorkFilters, "filters")
"""Give a command the work filters of ``ls``, as ``filters: WorkFilters``."""
