"""Who may use the web UI: the ``web-users`` file of ``workflow secure init``, and sessions.

The file sits next to the secured nats.conf, one user a line: ``name role bcrypt-hash``.
``workflow secure init`` writes ``operator`` and ``viewer`` (the same passwords as their
``<role>.env``), ``workflow secure web-user`` adds people by name, so the log's ``by``
says who acted (``web:ann``). Two roles matter here: ``viewer`` looks, ``operator`` acts;
the web process itself logs in to NATS once (as the operator role) and refuses a viewer's
action before it reaches NATS.

Sessions live in this process's memory (a restart logs everyone out, which is the safe
failure): a random token in an HttpOnly, SameSite=Strict cookie, and a CSRF token per
session that every form that acts carries.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from workflow.core.errors import ValidationError

#: The roles a web user may have: what each may do.
WEB_ROLES = {"viewer": "look", "operator": "look and act (cancel, requeue, priority, bulk)"}
USERS_FILE = "web-users"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
#: How long a session lasts without use.
SESSION_SECONDS = 12 * 3600
#: Sessions held at most: past it the least recently opened goes (memory stays bounded
#: whatever opens sessions, e.g. a script that never keeps its cookie).
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class WebUser:
    """One person (or role) who may log in: name, role and bcrypt hash of the password."""

    name: str
    role: str
    password_hash: str = field(repr=False)

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValidationError("name", f"a web user's name is 1-64 letters, digits or _.@-, not {name!r}")
    return name


def user_line(name: str, role: str, password_hash: str) -> str:
    if role not in WEB_ROLES:
        raise ValidationError("role", f"a web user is one of {', '.join(WEB_ROLES)}, not {role!r}")
    return f"{check_name(name)} {role} {password_hash}\n"


def parse_users(text: str) -> dict[str, WebUser]:
    """The users of a ``web-users`` file (ValidationError naming a bad line)."""
    users: dict[str, WebUser] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[1] not in WEB_ROLES or not parts[2].startswith("$2"):
            raise ValidationError("web-users", f"line {number}: expected `name role bcrypt-hash`, got {line[:40]!r}")
        users[parts[0]] = WebUser(parts[0], parts[1], parts[2])
    return users


def load_users(path: Path) -> dict[str, WebUser]:
    return parse_users(path.read_text())


#: A hash to check against when the name is unknown, so an unknown name costs as long as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"no such user", bcrypt.gensalt(10))


def authenticate(users: Mapping[str, WebUser], name: str, password: str) -> WebUser | None:
    """The user if the password is theirs, else None (bcrypt checks either way)."""
    user = users.get(name)
    hashed = user.password_hash.encode() if user else _DUMMY_HASH
    matches = bcrypt.checkpw(password.encode(), hashed)
    return user if user is not None and matches else None


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    expires: float

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


class Sessions:
    """Logged-in browsers by their cookie's token (memory only)."""

    def __init__(self, lifetime: float = SESSION_SECONDS) -> None:
        self.lifetime = lifetime
        self._by_token: dict[str, Session] = {}

    def open(self, user: str, role: str) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(user, role, secrets.token_urlsafe(32), time.time() + self.lifetime)
        self._forget_expired()
        while len(self._by_token) >= MAX_SESSIONS:
            del self._by_token[next(iter(self._by_token))]  # dicts keep insertion order: the oldest
        self._by_token[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        session = self._by_token.get(token or "")
        if session is None or session.expires < time.time():
            return None
        session.expires = time.time() + self.lifetime
        return session

    def close(self, token: str | None) -> None:
        self._by_token.pop(token or "", None)

    def _forget_expired(self) -> None:
        now = time.time()
        for token in [t for t, s in self._by_token.items() if s.expires < now]:
            del self._by_token[token]


def csrf_ok(session: Session, sent: str | None) -> bool:
    """Whether a form's CSRF token is its session's (constant-time compare)."""
    return sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode())
