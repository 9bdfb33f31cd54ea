"""The error tree of workflow.

Every error a user can meet is a :class:`WorkflowError`, so scripts can catch one type;
the subclasses say what went wrong precisely enough to act on it.
"""

from __future__ import annotations


class WorkflowError(Exception):
    """Base class of every error raised by workflow."""


class ValidationError(WorkflowError, ValueError):
    """Raised when a Work field (or another input) is outside its allowed values.

    The message always names the field, e.g. ``priority: Expected `int` <= 5``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ConflictError(WorkflowError):
    """Raised when a write is refused because the work changed since the writer last saw it.

    This is the per-work optimistic concurrency check: the work was cancelled, finished,
    re-queued or handed to another worker meanwhile. Nothing was written.
    """


class AlreadyExistsError(ConflictError):
    """Raised when something to be created (a stream, a bucket) exists already: whoever
    asked second may take the existing one as it is."""


class NotFoundError(WorkflowError, KeyError):
    """Raised when no work with the given id exists in the log."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of its argument
        return str(self.args[0]) if self.args else "not found"


class PayloadTooLargeError(WorkflowError):
    """Raised when an event (a work, or its results) is larger than the server accepts.

    Nothing is silently dropped: the caller learns the size and the limit.
    """


class ConnectionFailedError(WorkflowError):
    """Raised when no NATS server can be reached at the given URL."""


class ServerTooOldError(WorkflowError):
    """Raised when the NATS server lacks a feature workflow's bookkeeping relies on."""


class StreamConfigMismatchError(WorkflowError):
    """Raised when the WORKFLOW stream exists with a configuration other than ``streams/``.

    workflow never changes an existing log's configuration silently; the message lists
    the differing fields, and ``workflow streams apply --update`` applies them on purpose.
    """


class UnknownFunctionError(WorkflowError):
    """Raised when a work names a function that cannot be imported."""


class PermissionDeniedError(WorkflowError):
    """Raised when the NATS server refuses the login, or refuses this user an operation.

    Who may do what is the server's to say (``workflow secure init`` writes the roles); the
    message names the user and the subject it may not use. Nothing was written.
    """


class FoldError(WorkflowError, ValueError):
    """Raised when an event cannot follow the state it is applied to (a corrupt log, or an
    event someone appended around the CAS): :func:`workflow.core.fold.refusal` says why."""


class ResultsError(WorkflowError, TypeError):
    """Raised when a function returned something that cannot be stored as JSON results."""


class NotConnectedError(ConnectionFailedError):
    """Raised when a long-running view (the TUI) has no connection yet: the server has not
    answered; it connects by itself as soon as it does."""
