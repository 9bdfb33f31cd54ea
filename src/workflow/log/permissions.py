"""The NATS server's refusals (a login, a publish), as :class:`PermissionDeniedError`.

nats-py reports a refused publish only to the connection's error callback, as an
asynchronous ``-ERR``; the request that published it would wait for its timeout and then
look like an outage. :class:`RefusalWatch` is that callback's other half: it fails the
connection's pending requests (nats-py's, and the appends' of :mod:`workflow.log.requests`)
at once with an error that says who may not do what, tells whoever waits on a pull
(:meth:`RefusalWatch.on_refusal`), and it remembers a refused login, which nats-py
otherwise turns into "no servers available" after its reconnect attempts:
:meth:`RefusalWatch.bounded` ends a connect at the first refusal instead.

Messages print the URL without its password or token (:func:`~workflow.core.settings.redacted`)
and name the user that was refused, however it was given (an option, the URL, a token, a
creds file); the subject keeps its case (see :mod:`workflow.log.connection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import nats.aio.client

from workflow.core.errors import PermissionDeniedError
from workflow.core.settings import redacted, url_has_token, url_user
from workflow.log.requests import Requests

T = TypeVar("T")

_VIOLATION = re.compile(r"permissions violation for (publish|subscription) to \"?([^\"']+)", re.IGNORECASE)
_LOGIN_REFUSED = ("authorization violation", "authentication expired", "authentication timeout")


def who(url: str, options: Mapping[str, Any]) -> str | None:
    """The credentials a connection logs in with, as a message names them (None: none)."""
    user = options.get("user") or url_user(url)
    if user:
        return f"user {user!r}"
    if options.get("token") or url_has_token(url):
        return "the token given"
    if options.get("user_credentials"):
        return f"the credentials in {options['user_credentials']}"
    if options.get("nkeys_seed"):
        return f"the nkey in {options['nkeys_seed']}"
    return None


def login_refused(url: str, options: Mapping[str, Any]) -> PermissionDeniedError:
    """The error of a refused login: who was refused, by which server (no secret shown)."""
    hint = ("give a role's --nats-user and --nats-password (WORKFLOW_NATS_USER, WORKFLOW_NATS_PASSWORD: "
            "the <role>.env files of `workflow secure init`)")
    credentials = who(url, options)
    if credentials is None:
        return PermissionDeniedError(
            f"authorization failed: the NATS server at {redacted(url)} asks for credentials and "
            f"no credentials were given; {hint}")
    return PermissionDeniedError(
        f"authorization failed for {credentials}: the NATS server at {redacted(url)} refused the login "
        f"(a wrong password, or no such user); {hint}")


class RefusalWatch:
    """An error callback's helper for one connection to ``url`` with ``options``."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})
        self.user = self.options.get("user") or url_user(url)
        self.nc: nats.aio.client.Client | None = None
        #: The appends' own requests (``workflow.log.requests``), failed like nats-py's.
        self.requests: Requests | None = None
        self.login_refused: PermissionDeniedError | None = None
        #: The last operation the server refused: a refused pull has no request to fail,
        #: so whoever pulls asks here why nothing came.
        self.last_refusal: PermissionDeniedError | None = None
        self._listeners: list[Callable[[str, PermissionDeniedError], None]] = []
        self._refused_login: asyncio.Event | None = None  # made by each bounded connect, in its loop

    def on_refusal(self, listener: Callable[[str, PermissionDeniedError], None]) -> None:
        """Call ``listener(subject, error)`` at each refused publish (a pull waits on it)."""
        self._listeners.append(listener)

    async def __call__(self, error: Exception) -> None:
        text = str(error)
        if any(phrase in text.lower() for phrase in _LOGIN_REFUSED) or type(error).__name__ == "AuthorizationError":
            self.login_refused = login_refused(self.url, self.options)
            if self._refused_login is not None:
                self._refused_login.set()
            return
        match = _VIOLATION.search(text)
        if match is None:
            return
        verb = "publish" if match.group(1).lower() == "publish" else "subscribe"
        subject = match.group(2).strip()
        refused = PermissionDeniedError(
            f"permission denied: NATS user {self.user or '(anonymous)'!s} may not {verb} to {subject}"
        )
        self.last_refusal = refused
        if verb == "publish" and self.nc is not None:
            self._fail_requests(self.nc, refused)
        if verb == "publish" and self.requests is not None:
            self.requests.fail_pending(refused)
        for listener in self._listeners:
            listener(subject, refused)

    async def bounded(self, connecting: Awaitable[T]) -> T:
        """``await connecting``, or the refused login's error as soon as the server refuses
        it (nats-py would try again, and then say only "no servers available")."""
        self._refused_login = asyncio.Event()
        connect = asyncio.ensure_future(connecting)
        refused = asyncio.ensure_future(self._refused_login.wait())
        try:
            await asyncio.wait({connect, refused}, return_when=asyncio.FIRST_COMPLETED)
            if connect.done():
                return connect.result()
            assert self.login_refused is not None
            raise self.login_refused
        finally:
            refused.cancel()
            self._refused_login = None
            if not connect.done():
                connect.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connect

    @staticmethod
    def _fail_requests(nc: nats.aio.client.Client, refused: PermissionDeniedError) -> None:
        """Fail every request of ``nc`` still waiting for its answer: the server dropped the
        refused one, and telling which it was would need the subject of each."""
        for future in list(nc._resp_map.values()):
            if not future.done():
                future.set_exception(refused)


@contextlib.contextmanager
def refused_as(action: str) -> Iterator[None]:
    """Name the action in a refusal raised inside the block: ``permission denied: deposit
    refused: NATS user viewer may not publish to wf.…``."""
    try:
        yield
    except PermissionDeniedError as error:
        raise during(error, action) from None


def during(error: PermissionDeniedError, action: str) -> PermissionDeniedError:
    """``error`` with the refused ``action`` named (unchanged if it names one already)."""
    text = str(error)
    prefix = "permission denied: "
    if not text.startswith(prefix) or " refused: " in text:
        return error
    return PermissionDeniedError(f"{prefix}{action} refused: {text[len(prefix):]}")
