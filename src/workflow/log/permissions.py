"""The NATS server's refusals (a login, a publish), as :class:`PermissionDeniedError`.

nats-py reports a refused publish only to the connection's error callback, as an
asynchronous ``-ERR``; the request that published it would wait for its timeout and then
look like an outage. :class:`RefusalWatch` is that callback's other half: it fails the
connection's pending requests (nats-py's, and the appends' of :mod:`workflow.log.requests`)
at once with an error that says who may not do what, and it remembers a refused login,
which nats-py otherwise turns into "no servers available".
"""

from __future__ import annotations

import re

import nats.aio.client

from workflow.core.errors import PermissionDeniedError
from workflow.log.requests import Requests

_VIOLATION = re.compile(r"permissions violation for (publish|subscription) to \"?([^\"']+)", re.IGNORECASE)
_LOGIN_REFUSED = ("authorization violation", "authentication expired", "authentication timeout")


class RefusalWatch:
    """An error callback's helper for one connection to ``url`` as ``user``."""

    def __init__(self, url: str, user: str | None) -> None:
        self.url = url
        self.user = user
        self.nc: nats.aio.client.Client | None = None
        #: The appends' own requests (``workflow.log.requests``), failed like nats-py's.
        self.requests: Requests | None = None
        self.login_refused: PermissionDeniedError | None = None
        #: The last operation the server refused: a refused pull has no request to fail,
        #: so whoever pulls asks here why nothing came.
        self.last_refusal: PermissionDeniedError | None = None

    async def __call__(self, error: Exception) -> None:
        text = str(error)
        if any(phrase in text.lower() for phrase in _LOGIN_REFUSED):
            self.login_refused = PermissionDeniedError(
                f"authorization failed: the NATS server at {self.url} refused the login "
                + (f"of user {self.user!r}" if self.user else "(no credentials were given)")
                + "; give a role's --nats-user and --nats-password (WORKFLOW_NATS_USER, WORKFLOW_NATS_PASSWORD: "
                "the <role>.env files of `workflow secure init`)"
            )
            return
        match = _VIOLATION.search(text)
        if match is None:
            return
        verb = "publish" if match.group(1).lower() == "publish" else "subscribe"
        refused = PermissionDeniedError(
            f"permission denied: NATS user {self.user or '(anonymous)'!s} may not {verb} to {match.group(2)}"
        )
        self.last_refusal = refused
        if verb == "publish" and self.nc is not None:
            self._fail_requests(self.nc, refused)
        if verb == "publish" and self.requests is not None:
            self.requests.fail_pending(refused)

    @staticmethod
    def _fail_requests(nc: nats.aio.client.Client, refused: PermissionDeniedError) -> None:
        """Fail every request of ``nc`` still waiting for its answer: the server dropped the
        refused one, and telling which it was would need the subject of each."""
        for future in list(nc._resp_map.values()):
            if not future.done():
                future.set_exception(refused)
