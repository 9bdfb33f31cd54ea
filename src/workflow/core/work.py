"""``Work``: one unit of telescope work, with exactly the fields and defaults of the seed.

A Work is validated when it is made and whenever a field is assigned, so a bad value is
refused where it is written, with the field's name, long before it reaches a worker.

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

from workflow.core import session
from workflow.core.errors import ValidationError
from workflow.core.settings import allowed_sites
from workflow.core.status import FINISHED, Status

NAME_PATTERN = r"^[A-Za-z0-9-]+$"
_FUNCTION_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

Pipeline = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=NAME_PATTERN)]
Site = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NAME_PATTERN)]
Timeout = Annotated[int, msgspec.Meta(ge=1, le=259_200)]
Retries = Annotated[int, msgspec.Meta(ge=0, le=5)]
Priority = Annotated[int, msgspec.Meta(ge=1, le=5)]
Attempt = Annotated[int, msgspec.Meta(ge=0)]


class Work(msgspec.Struct, kw_only=True):
    """One unit of work: what to run, with which parameters, and what became of it.

    ``Work(pipeline="sample-pipeline", parameters={"a": 1, "b": 2})`` is all it takes;
    lifecycle fields (``id``, ``status``, ``attempt``, ``start``, ``stop``, ``results``)
    are filled in as the work moves through the system.
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
    id: str | None = None
    creation: float | None = msgspec.field(default_factory=time.time)
    start: float | None = None
    stop: float | None = None
    attempt: Attempt = 0
    status: Status = "created"

    def __post_init__(self) -> None:
        # One conversion of all fields against a hook-free twin is ~10x faster than
        # checking field by field, which matters when thousands of works are deposited.
        try:
            msgspec.convert(msgspec.structs.asdict(self), type=_schema(), strict=True)
        except msgspec.ValidationError as error:
            raise _as_validation_error(error) from None
        _check_extra_rules("site", self.site)
        _check_extra_rules("function", self.function)
        _check_extra_rules("command", self.command)
        _check_consistency(self.function, self.command)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__struct_fields__:
            _check_field(name, value)
            if name == "function":
                _check_consistency(value, self.command)
            elif name == "command":
                _check_consistency(self.function, value)
        super().__setattr__(name, value)

    @property
    def payload(self) -> dict[str, Any]:
        """The whole work as a plain dict, as stored (the seed's ``work.payload``).

        ``function`` and ``command`` appear only when set, so a plain work's payload is
        exactly the seed's dictionary.
        """
        data: dict[str, Any] = msgspec.to_builtins(self)
        for optional in ("function", "command"):
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Work:
        """Build a Work from a payload dict (unknown keys are refused, with their name)."""
        try:
            work: Work = msgspec.convert(payload, type=cls)
        except msgspec.ValidationError as error:
            raise _as_validation_error(error) from None
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


def _as_validation_error(error: msgspec.ValidationError) -> ValidationError:
    message = str(error)
    match = re.search(r" - at `\$\.([A-Za-z_]+)", message)
    field = match.group(1) if match else "work"
    message = re.sub(r" - at `\$[^`]*`", "", message)
    return ValidationError(field, message)


def _check_field(name: str, value: Any) -> None:
    try:
        msgspec.convert(value, type=_field_types()[name], strict=True)
    except msgspec.ValidationError as error:
        raise ValidationError(name, f"{error} (got {value!r})") from None
    _check_extra_rules(name, value)


def _check_extra_rules(name: str, value: Any) -> None:
    """Rules a type annotation cannot say: the site list, dotted paths, non-empty argv."""
    if name == "site" and value not in allowed_sites():
        raise ValidationError(
            "site",
            f"unknown site {value!r}; known sites: {', '.join(sorted(allowed_sites()))} "
            "(set WORKFLOW_SITES=a,b to add more)",
        )
    if name == "function" and value is not None and not _FUNCTION_PATTERN.match(value):
        raise ValidationError("function", f"expected a dotted path like 'module.func', got {value!r}")
    if name == "command" and value is not None and not value:
        raise ValidationError("command", "expected a non-empty argv list")


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


def validate_field(field: str, value: Any) -> Any:
    """Check one Work field's value given outside a Work (CLI, withdraw, worker options),
    by the same rules and with the same message as a Work would."""
    _check_field(field, value)
    return value
