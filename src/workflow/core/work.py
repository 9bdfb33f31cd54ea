"""``Work``: one unit of telescope work, with exactly the fields and defaults of the seed.

A Work is validated when it is made and whenever a field is assigned, so a bad value is
refused where it is written, with the field's name and its rule in plain words (see
:data:`RULES`), long before it reaches a worker. A field the Work does not have is refused
too (``Work(...)``, :meth:`Work.from_payload`), never silently dropped.

Two checks belong to the places where a work *enters* the system, not to the type:

- the **site list** (``WORKFLOW_SITES``) is this host's configuration, so it is checked at
  deposit (:func:`check_site`), never when a work is read back: a reader or a server that
  does not know a site must still read every work the log accepted;
- **unknown fields** are refused where a caller writes a work; the events in the log embed
  the Work and keep decoding as they always did (a field the code no longer has is
  ignored there), since an event written once must stay readable. That is why the Work
  is not declared with msgspec's ``forbid_unknown_fields``: msgspec applies a type's
  config wherever the type is decoded, events included, with no per-decoder override.

The async shortcuts (``await work.deposit()``, ``await Work.withdraw(...)``,
``await work.update()``) keep the seed's shape; they use the client opened by
``workflow.connect()`` in the current task, or open one to the default URL.
"""

from __future__ import annotations

import copy as _copy
import re
import time
from functools import cache
from typing import Annotated, Any

import msgspec

from workflow.core import notify as notify_
from workflow.core import session
from workflow.core.errors import ValidationError
from workflow.core.notify import Notify
from workflow.core.retry import check_retry_on
from workflow.core.settings import allowed_sites
from workflow.core.status import FINISHED, STATUSES, Status

NAME_PATTERN = r"^[A-Za-z0-9-]+$"
_FUNCTION_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

Pipeline = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=NAME_PATTERN)]
Site = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NAME_PATTERN)]
Timeout = Annotated[int, msgspec.Meta(ge=1, le=259_200)]
Retries = Annotated[int, msgspec.Meta(ge=0, le=5)]
#: Priorities run from 1 (lowest) to 5 (highest): the one place their bounds are written.
LOWEST_PRIORITY, HIGHEST_PRIORITY = 1, 5
Priority = Annotated[int, msgspec.Meta(ge=LOWEST_PRIORITY, le=HIGHEST_PRIORITY)]
#: Every priority, highest first: the order buckets are asked in.
PRIORITIES: tuple[int, ...] = tuple(range(HIGHEST_PRIORITY, LOWEST_PRIORITY - 1, -1))
Attempt = Annotated[int, msgspec.Meta(ge=0)]

#: Each field's rule as a user reads it in an error ("priority is 1 (lowest) to 5 (highest)"),
#: instead of msgspec's regex and bound wording. The bounds are those of the seed (REFERENCE.md).
RULES: dict[str, str] = {
    "pipeline": "pipeline names are 1–128 letters, digits and '-'",
    "site": "site names are 1–64 letters, digits and '-'",
    "timeout": "timeout is 1 to 259200 seconds (3 days), a whole number",
    "retries": "retries is 0 to 5 (how many times a failed attempt is tried again), a whole number",
    "priority": "priority is 1 (lowest) to 5 (highest), a whole number",
    "attempt": "attempt is a whole number, 0 or more",
    "status": f"status is one of {', '.join(STATUSES)}",
    "parameters": "parameters is a dict (a JSON object with text keys) or None",
    "results": "results is a dict (a JSON object with text keys) or None",
    "config": "config is a dict (a JSON object with text keys) or None",
    "path": "path is text (a working directory)",
    "event": "event is a list of telescope event numbers (whole numbers) or None",
    "tags": "tags is a list of text labels or None",
    "group": "group is a list of working-group names (text) or None",
    "products": "products is a list of file paths (text) or None",
    "plots": "plots is a list of file paths (text) or None",
    "user": "user is text or None",
    "archive": "archive is true or false",
    "precursors": "precursors is a list of work ids or None",
    "function": "function is a dotted path like 'module.func', or None",
    "command": "command is a non-empty argv list of text, like ['echo', 'hi'], or None",
    "notify": notify_.RULE,
    "id": "id is text or None",
    "creation": "creation is a time in unix seconds or None",
    "start": "start is a time in unix seconds or None",
    "stop": "stop is a time in unix seconds or None",
}


class _WorkMeta(msgspec.StructMeta):
    """``Work(...)``, a caller writing a work: a field the Work does not have (msgspec's
    TypeError) becomes a ValidationError that names it and lists the known fields, and
    ``config["retry_on"]`` is checked. Decoding never comes here (it runs only
    ``__post_init__``), so what the log holds is read as it always was."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            work = super().__call__(*args, **kwargs)
        except TypeError:
            unknown = sorted(kwargs.keys() - set(cls.__struct_fields__))
            if unknown:
                raise unknown_fields_error(unknown) from None
            if "pipeline" not in kwargs:
                raise ValidationError("pipeline", "a work needs a pipeline: " + RULES["pipeline"]) from None
            raise
        check_retry_on(work.config)  # here, not in __post_init__: decoding runs that too
        return work


class Work(msgspec.Struct, kw_only=True, metaclass=_WorkMeta):
    """One unit of work: what to run, with which parameters, and what became of it.

    ``Work(pipeline="sample-pipeline", parameters={"a": 1, "b": 2})`` is all it takes;
    lifecycle fields (``id``, ``status``, ``attempt``, ``start``, ``stop``, ``results``)
    are filled in as the work moves through the system.

    A field it does not have is refused (ValidationError naming it), never dropped.
    ``config`` is free-form, except for the keys workflow reads: ``parent`` (the withdraw
    filter ``parent=``) and ``retry_on``, the failure reasons that use a retry (any of
    ``"error"``, ``"timeout"``, ``"reported"``; all three when absent: see
    :mod:`workflow.core.retry`). ``site`` must be one the depositing host knows
    (``WORKFLOW_SITES``), checked at deposit. ``notify`` says whom ``workflow server`` tells
    when the work ends (Slack, a configured webhook: :mod:`workflow.core.notify`).
    """

    pipeline: Pipeline
    parameters: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    path: str = "."
    event: list[int] | None = None
    tags: list[str] | None = None
    group: list[str] | None = None
    timeout: Timeout = 3600
    retries: Retries = 2
    priority: Priority = 3
    products: list[str] | None = None
    plots: list[str] | None = None
    site: Site = "local"
    user: str | None = None
    archive: bool = True
    precursors: list[Any] | None = None
    config: dict[str, Any] | None = None
    function: str | None = None
    command: list[str] | None = None
    notify: Notify | None = None
    id: str | None = None
    creation: float | None = msgspec.field(default_factory=time.time)
    start: float | None = None
    stop: float | None = None
    attempt: Attempt = 0
    status: Status = "created"

    def __post_init__(self) -> None:
        if self.notify is not None and not isinstance(self.notify, Notify):  # a dict a caller wrote
            msgspec.Struct.__setattr__(self, "notify", notify_.parse(self.notify))
        # One conversion of all fields against a hook-free twin is ~10x faster than
        # checking field by field, which matters when thousands of works are deposited.
        try:
            msgspec.convert(msgspec.structs.asdict(self), type=_schema(), strict=True)
        except msgspec.ValidationError as error:
            raise _as_validation_error(error, msgspec.structs.asdict(self)) from None
        _check_extra_rules("function", self.function)
        _check_extra_rules("command", self.command)
        _check_consistency(self.function, self.command)
        if self.notify is not None:
            notify_.check(self.notify)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "notify":
            value = notify_.parse(value)
        elif name in self.__struct_fields__:
            _check_field(name, value)
            if name == "function":
                _check_consistency(value, self.command)
            elif name == "config":
                check_retry_on(value)
            elif name == "command":
                _check_consistency(self.function, value)
        super().__setattr__(name, value)

    @property
    def payload(self) -> dict[str, Any]:
        """The whole work as a plain dict, as stored (the seed's ``work.payload``).

        ``function``, ``command`` and ``notify`` appear only when set, so a plain work's
        payload is exactly the seed's dictionary.
        """
        data: dict[str, Any] = msgspec.to_builtins(self)
        for optional in ("function", "command", "notify"):
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Work:
        """Build a Work from a payload dict (``work.payload``, or JSON a user wrote).

        A key the Work does not have is refused (ValidationError naming it and listing the
        known fields), never dropped: a ``notify`` or a misspelt ``priorty`` must not
        vanish on the way in.
        """
        if not isinstance(payload, dict):
            raise ValidationError("work", f"a work payload is a dict (a JSON object), got {type(payload).__name__}")
        unknown = sorted(payload.keys() - set(cls.__struct_fields__), key=str)
        if unknown:
            raise unknown_fields_error(unknown)
        notify_.check_keys(payload.get("notify"))
        try:
            work: Work = msgspec.convert(payload, type=cls)
        except msgspec.ValidationError as error:
            raise _as_validation_error(error, payload) from None
        check_retry_on(work.config)
        return work

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    # -- the seed's shape, async -------------------------------------------------------

    async def deposit(self, return_ids: bool = False) -> str | bool:
        """Deposit this work (``await work.deposit()``); returns its id if asked."""
        async with session.current() as client:
            [work_id] = await client.deposit(self)
        return work_id if return_ids else True

    @classmethod
    async def withdraw(
        cls,
        pipeline: str | list[str],
        site: str | None = None,
        priority: int | None = None,
        event: int | list[int] | None = None,
        user: str | None = None,
        tags: str | list[str] | None = None,
        parent: str | None = None,
    ) -> Work | None:
        """Withdraw the next work of ``pipeline`` (highest priority, then oldest), or None.

        Uses the client opened by ``workflow.connect()``: the lease on the work lives in
        that client, so withdraw and update inside the same ``async with``. ``tags``,
        ``event``, ``user`` and ``parent`` take only matching works, as the old system
        did: every filter given must hold; ``tags`` and ``event`` match a work with *any*
        of them; ``parent`` is the work's ``config["parent"]``. Other works stay queued,
        in order, for other workers.
        """
        async with session.current(require_open=True) as client:
            work: Work | None = await client.withdraw(
                pipeline, site=site, priority=priority, tags=tags, event=event, user=user, parent=parent
            )
        return work

    async def update(self) -> None:
        """Record this work's outcome (``status`` success or failure, with results)."""
        async with session.current() as client:
            await client.update(self)

    async def delete(self) -> bool:
        """Delete this work (``await work.delete()``): hidden from lists and counts from now
        on, its history kept (a ``Deleted`` event: the log is immutable). A work not yet
        finished is cancelled first. True once recorded; ConflictError if already deleted."""
        if self.id is None:
            raise ValidationError("id", "this work was never deposited: nothing to delete")
        async with session.current() as client:
            await client.delete(self.id)
        return True


@cache
def _field_types() -> dict[str, Any]:
    return {field.name: field.type for field in msgspec.structs.fields(Work)}


@cache
def _schema() -> type[msgspec.Struct]:
    """A plain Struct with Work's fields and types, used to validate a whole Work at once."""
    return msgspec.defstruct("WorkSchema", [(f.name, f.type) for f in msgspec.structs.fields(Work)])


def unknown_fields_error(unknown: list[Any]) -> ValidationError:
    """The error for fields a Work does not have: names them, and lists the ones it has."""
    names = ", ".join(repr(name) for name in unknown)
    return ValidationError(
        str(unknown[0]),
        f"a work has no field {names}; its fields are {', '.join(Work.__struct_fields__)}",
    )


def _as_validation_error(error: msgspec.ValidationError, values: dict[str, Any]) -> ValidationError:
    """msgspec's error for a whole work, as the rule of the field it names, in plain words."""
    message = str(error)
    own = re.match(r"([a-z_]+): (.*)", message, re.DOTALL)  # our own, from __post_init__, wrapped by msgspec
    if own is not None and own.group(1) in RULES:
        return ValidationError(own.group(1), own.group(2))
    match = re.search(r" - at `\$\.([A-Za-z_]+)", message)
    if match is None or match.group(1) not in RULES:
        return ValidationError("work", re.sub(r" - at `\$[^`]*`", "", message))
    field = match.group(1)
    if field == "notify":  # nested: say where in it
        detail = re.search(r"(.*) - at `\$\.(notify[^`]*)`", message)
        if detail is not None:
            return ValidationError("notify", f"{RULES['notify']}; {detail.group(1)} at {detail.group(2)}")
    return _rule_error(field, values.get(field))


def _rule_error(field: str, value: Any) -> ValidationError:
    return ValidationError(field, f"{RULES[field]}; got {value!r}")


def _check_field(name: str, value: Any) -> None:
    try:
        msgspec.convert(value, type=_field_types()[name], strict=True)
    except msgspec.ValidationError:
        raise _rule_error(name, value) from None
    _check_extra_rules(name, value)


def _check_extra_rules(name: str, value: Any) -> None:
    """Rules a type annotation cannot say: dotted paths, non-empty argv."""
    if name == "function" and value is not None and not _FUNCTION_PATTERN.match(value):
        raise _rule_error("function", value)
    if name == "command" and value is not None and not value:
        raise _rule_error("command", value)


def check_site(site: str) -> str:
    """``site`` if this host knows it (the real sites, plus ``WORKFLOW_SITES``), else a
    ValidationError listing them. Checked where a work enters the system (deposit, a
    re-queue to another site, a schedule, a worker's or a filter's ``--site``), never when
    a work is read back: the list is this host's configuration, and a reader that lacks
    a site must still read what the log accepted."""
    if site not in allowed_sites():
        raise ValidationError(
            "site",
            f"unknown site {site!r}; known sites: {', '.join(sorted(allowed_sites()))} "
            "(set WORKFLOW_SITES=a,b on this host to add more)",
        )
    return site


def _check_consistency(function: str | None, command: list[str] | None) -> None:
    if function is not None and command is not None:
        raise ValidationError("function", "a work runs a function or a command, not both")


def amend(work: Work, **changes: Any) -> Work:
    """A copy of ``work`` with ``changes``, without checking them again.

    Only for values already checked: the fold's, taken from events that were validated
    when they were decoded (or built by this code), and the outcome copied back onto the
    caller's Work. A ``Work(...)``, ``replace`` or attribute set re-validates every field,
    which cost about a tenth of a no-op work on the worker's hot path.
    """
    copy = _copy.copy(work)  # a Struct's copy does not run __post_init__
    for name, value in changes.items():
        msgspec.Struct.__setattr__(copy, name, value)
    return copy


def validate_field(field: str, value: Any, *, known_site: bool = True) -> Any:
    """Check one Work field's value given outside a Work (CLI, withdraw, worker options,
    filters), by the same rules and with the same message as a Work would; a site must
    also be one this host knows (:func:`check_site`), as at deposit, unless ``known_site``
    is False (a search reads what the log accepted)."""
    _check_field(field, value)
    if field == "site" and known_site:
        check_site(value)
    return value
