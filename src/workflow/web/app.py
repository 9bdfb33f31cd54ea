"""The web UI: server-rendered pages with addresses, a JSON API, live updates by
server-sent events, and actions by role.

A thin layer over :class:`workflow.web.backend.Backend` (``client.results`` and the log's
client): every page is one or two questions to the results service, rendered by Jinja2
with autoescaping on, so a tag, a parameter or an error a user wrote is always text.
The search is the TUI's query language (:mod:`workflow.core.search`) and the URL is the
search: ``/works?q=status:failure user:ann&page=2&order=-creation``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from workflow.archive.products import recorded
from workflow.core.errors import ConflictError, NotFoundError, ValidationError, WorkflowError
from workflow.core.products import ChecksumMismatchError
from workflow.core.search import SEARCH_HINT, SYNTAX_HELP, Search, parse
from workflow.core.status import FINISHED, LOGGED
from workflow.results.queries import ORDERABLE
from workflow.web import openapi
from workflow.web.backend import BULK_LIMIT, FOLLOWERS_SHOWN, Backend, plain
from workflow.web.chart import per_minute_chart
from workflow.web.live import LiveHub
from workflow.web.throttle import LoginLimits, LoginThrottle, Refusal
from workflow.web.users import Session, Sessions, WebUser, authenticate, csrf_ok

HERE = Path(__file__).parent
log = logging.getLogger("workflow.web")
COOKIE = "wf_session"
PAGE_SIZES = (25, 50, 100, 200)
#: The fields a work's page lists first (the rest follow in the Work's order).
FIRST_FIELDS = ("id", "status", "pipeline", "site", "priority", "attempt", "retries", "user", "creation", "start",
                "stop", "function", "command")
#: A work may be retried by hand once it ended without success (as in the TUI).
RETRYABLE = ("failure", "cancelled")


@dataclass
class WebSettings:
    """How the UI runs: its users (None: no login, loopback only) and the local user's name."""

    users: dict[str, WebUser] | None = None
    local_user: str = "local"
    login_limits: LoginLimits = field(default_factory=LoginLimits)


def templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    environment.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
    environment.filters["when"] = _when
    environment.filters["duration"] = _duration
    environment.filters["bytes"] = _bytes
    environment.globals["file_href"] = _file_href
    environment.globals.update(SEARCH_HINT=SEARCH_HINT, SYNTAX_HELP=SYNTAX_HELP, FINISHED=FINISHED,
                               RETRYABLE=RETRYABLE, STATUSES=LOGGED)
    return environment


def _when(moment: float | None) -> str:
    if moment is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


def _bytes(size: int | None) -> str:
    if size is None:
        return "—"
    if size < 1024:
        return f"{size:,} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:,.1f} {unit}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class WebApp:
    """Routes and their handlers, sharing one backend, the sessions and the templates."""

    def __init__(self, backend: Backend, settings: WebSettings) -> None:
        self.backend = backend
        self.settings = settings
        self.sessions = Sessions()
        self.throttle = LoginThrottle(settings.login_limits)
        self.templates = templates()
        self._hub: LiveHub | None = None

    # -- sessions and roles -------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def _local_session(self, request: Request) -> tuple[Session, str | None]:
        """Without users, every browser is the local operator (a session still carries a CSRF token)."""
        token = request.cookies.get(COOKIE)
        session = self.sessions.get(token)
        if session is not None:
            return session, None
        new_token, session = self.sessions.open(self.settings.local_user, "operator")
        return session, new_token

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        session: Session | None = request.state.session
        html = self.templates.get_template(name).render(
            request=request, session=session, may_act=session is not None and session.may_act,
            secured=self.settings.users is not None, path=request.url.path, q=request.query_params.get("q", ""),
            **context)
        return HTMLResponse(html, status_code=status)

    def error_page(self, request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/") or request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse({"error": message}, status_code=status)
        return self.render(request, "error.html", status=status, status_code=status, message=message)

    async def form(self, request: Request) -> dict[str, str]:
        """An urlencoded form (what the pages and app.js send) as single values."""
        body = (await request.body()).decode(errors="replace")
        return {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}

    async def acting_session(self, request: Request, form: dict[str, str]) -> Session | Response:
        """The session allowed to act, or the response refusing (403: not logged in, a viewer, a bad CSRF token)."""
        session: Session | None = request.state.session
        if session is None:
            return self.error_page(request, 403, "log in to act")
        sent = form.get("csrf") or request.headers.get("x-csrf-token")
        if not csrf_ok(session, sent):
            return self.error_page(request, 403, "the form's CSRF token is missing or stale: reload the page")
        if not session.may_act:
            return self.error_page(request, 403, f"{session.user} is a viewer: viewers look, operators act")
        return session

    # -- pages ----------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        data = await self.backend.dashboard()
        return self.render(request, "dashboard.html", chart=per_minute_chart(data["per_minute"]),
                           pipelines=sorted(data["pipelines"].items()), buckets=data["buckets"],
                           schedules=data["schedules"], statuses=LOGGED)

    def _search_args(self, request: Request) -> tuple[Search, int, int, str]:
        params = request.query_params
        search = parse(params.get("q", ""))
        size = _int(params.get("size"), 50, "size")
        if size not in PAGE_SIZES:
            raise ValidationError("size", f"a page holds one of {', '.join(map(str, PAGE_SIZES))} works, not {size}")
        page = _int(params.get("page"), 1, "page")
        if page < 1:
            raise ValidationError("page", "pages count from 1")
        order = params.get("order", "-creation")
        if order.lstrip("-") not in ORDERABLE:
            raise ValidationError("order", f"order by one of {', '.join(ORDERABLE)} (- for descending), not {order!r}")
        return search, page, size, order

    async def works(self, request: Request) -> Response:
        try:
            search, page, size, order = self._search_args(request)
        except ValidationError as error:
            return self.render(request, "works.html", status=400, error=str(error), works=[], total=0, page=1,
                               pages=1, size=50, order="-creation", link=lambda **_: "#", sort_link=lambda _: "#")
        works, total = await self.backend.search(search, limit=size, offset=(page - 1) * size, order=order)
        pages = max(1, math.ceil(total / size))
        base = {"q": search.text, "size": size, "order": order}

        def link(**changes: Any) -> str:
            return "/works?" + urlencode({**base, "page": page, **changes})

        def sort_link(column: str) -> str:
            return link(order=column if order == f"-{column}" else f"-{column}", page=1)

        return self.render(request, "works.html", works=works, total=total, page=page, pages=pages, size=size,
                           order=order, link=link, sort_link=sort_link, error=None, search=search)

    async def work(self, request: Request) -> Response:
        work_id = request.path_params["work_id"]
        try:
            work, history, followers = await self.backend.work(work_id)
        except NotFoundError:
            return self.error_page(request, 404, f"no work {work_id}")
        timeline = [{"seq": record.seq, **plain(record.event)} for record in history]
        everything = plain(work)
        first = [key for key in FIRST_FIELDS if key in everything]
        fields = {key: everything[key] for key in [*first, *(k for k in everything if k not in first)]}
        files = recorded([record.event for record in history])  # what client.products.list reads, from this history
        return self.render(request, "work.html", work=work, fields=fields, timeline=timeline,
                           precursors=[str(p) for p in work.precursors or []],
                           followers=followers[:FOLLOWERS_SHOWN], more_followers=len(followers) > FOLLOWERS_SHOWN,
                           plots=[f for f in files if f.kind == "plot"],
                           products=[f for f in files if f.kind == "product"], image=_image_type)

    async def events(self, request: Request) -> Response:
        try:
            search = parse(request.query_params.get("q", ""))
        except ValidationError as error:
            return self.render(request, "events.html", status=400, error=str(error))
        return self.render(request, "events.html", error=None, search=search)

    async def bulk(self, request: Request) -> Response:
        """GET: what "cancel these N" would act on, to confirm; POST: do it."""
        if request.method == "GET":
            try:
                search = parse(request.query_params.get("q", ""))
            except ValidationError as error:
                return self.error_page(request, 400, str(error))
            count = await self.backend.reader.results.count(**search.filters(), fresh=True)
            return self.render(request, "bulk.html", search=search, count=count, report=None, limit=BULK_LIMIT)
        form = await self.form(request)
        session = await self.acting_session(request, form)
        if isinstance(session, Response):
            return session
        try:
            search = parse(form.get("q", ""))
        except ValidationError as error:
            return self.error_page(request, 400, str(error))
        if form.get("action") != "cancel":
            return self.error_page(request, 400, "the bulk action is cancel")
        ids = await self.backend.matching_ids(search)
        expected = _int(form.get("expected"), -1, "expected")
        if expected >= 0 and len(ids) > expected:
            return self.error_page(request, 409, f"the search now finds {len(ids):,} works, not the {expected:,} you "
                                   "confirmed: look again before cancelling")
        report = await self.backend.cancel_many(session.user, ids, form.get("reason"))
        return self.render(request, "bulk.html", search=search, count=len(ids), report=report, limit=BULK_LIMIT)

    async def act(self, request: Request) -> Response:
        """POST /works/ID/cancel|requeue|priority: one event, written as ``web:<user>``."""
        work_id, action = request.path_params["work_id"], request.path_params["action"]
        form = await self.form(request)
        session = await self.acting_session(request, form)
        if isinstance(session, Response):
            return session
        try:
            if action == "cancel":
                await self.backend.cancel(session.user, work_id, form.get("reason") or None)
            elif action == "requeue":
                await self._check_status(work_id, RETRYABLE, "only a failed or cancelled work is retried")
                await self.backend.requeue(session.user, work_id)
            elif action == "priority":
                priority = _int(form.get("priority"), -1, "priority")
                await self._check_status(work_id, ("queued",), "only a queued work changes priority")
                await self.backend.requeue(session.user, work_id, priority=priority)
            else:
                return self.error_page(request, 404, f"no action {action!r}: cancel, requeue or priority")
        except NotFoundError as error:
            return self.error_page(request, 404, str(error))
        except ValidationError as error:  # a priority out of range, a bad field
            return self.error_page(request, 400, str(error))
        except WorkflowError as error:  # refused by the work's state, or changed meanwhile
            return self.error_page(request, 409, str(error))
        if request.headers.get("accept", "").startswith("application/json") or request.url.path.startswith("/api/"):
            return JSONResponse({"ok": True, "action": action, "id": work_id, "by": f"web:{session.user}"})
        return RedirectResponse(f"/works/{work_id}", status_code=303)

    async def _check_status(self, work_id: str, allowed: tuple[str, ...], rule: str) -> None:
        """Refuse up front what the TUI refuses (the log's CAS still has the last word)."""
        work = await self.backend.reader.results.get(work_id, fresh=True)
        if work.status not in allowed:
            raise ConflictError(f"{rule}; {work_id} is {work.status}")

    # -- login ------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if self.settings.users is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return self.render(request, "login.html", error=None, next=request.query_params.get("next", "/"))
        form = await self.form(request)
        name, address = form.get("user", ""), request.client.host if request.client else "?"
        target = form.get("next") or "/"
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        refusal = self.throttle.refused(name, address)  # before bcrypt: a refused guess costs nothing
        if refusal is not None:
            return self._refused(request, refusal, name, target)
        user = await asyncio.to_thread(authenticate, self.settings.users, name, form.get("password", ""))
        if user is None:
            refusal = self.throttle.failed(name, address)
            if refusal is not None:
                log.warning("web login: too many failed logins %s; refused for %d s",
                            f"for user {name!r}" if refusal.who == "user" else f"from {address}", refusal.retry_after)
                return self._refused(request, refusal, name, target)
            return self.render(request, "login.html", status=401, error="wrong name or password", next=target)
        self.throttle.succeeded(name)
        token, _ = self.sessions.open(user.name, user.role)
        redirect = RedirectResponse(target, status_code=303)
        _set_cookie(redirect, token, request)
        return redirect

    def _refused(self, request: Request, refusal: Refusal, name: str, target: str) -> Response:
        """429, saying for how long (``Retry-After``) and why, on the login page."""
        response = self.render(request, "login.html", status=429, error=refusal.message(name), next=target)
        response.headers["Retry-After"] = str(refusal.retry_after)
        return response

    async def logout(self, request: Request) -> Response:
        form = await self.form(request)
        session = request.state.session
        if session is not None and csrf_ok(session, form.get("csrf")):
            self.sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    # -- live: server-sent events -------------------------------------------------------------

    @property
    def hub(self) -> LiveHub:
        if self._hub is None:
            raise RuntimeError("the live hub starts with the app")
        return self._hub

    async def start(self) -> None:
        self._hub = LiveHub(self.backend.reader.nc, lambda: self.backend.reader.results.pipelines(fresh=True))
        await self._hub.start()

    async def stop(self) -> None:
        if self._hub is not None:
            await self._hub.stop()

    def _stream(self, request: Request, listening: Any, render: Callable[[list[Any]], Awaitable[list[str]]],
                first: Callable[[], Awaitable[list[str]]] | None = None,
                debounce: float = 0.05) -> StreamingResponse:
        """Server-sent events: ``first``'s messages, then ``render``'s of each batch the
        listener receives (what arrives within ``debounce`` is one batch), until the browser goes."""

        async def body() -> AsyncIterator[str]:
            with listening as listener:
                yield "retry: 2000\n\nevent: ready\ndata: {}\n\n"  # listening from here on
                if first is not None:
                    for message in await first():
                        yield message
                while True:
                    try:
                        item = await asyncio.wait_for(listener.queue.get(), timeout=15)
                    except TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield ": keep-alive\n\n"
                        continue
                    await asyncio.sleep(debounce)
                    batch = [item]
                    while not listener.queue.empty():
                        batch.append(listener.queue.get_nowait())
                    for message in await render(batch):
                        yield message

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def live_counts(self, request: Request) -> Response:
        """The pipelines' counts now, then each time the log changes them (asked once for every open dashboard)."""

        async def now() -> list[str]:
            return [_sse("counts", await self.backend.reader.results.pipelines(fresh=True))]

        async def latest(batch: list[Any]) -> list[str]:
            counts = batch[-1]
            if isinstance(counts, Exception):
                return [_sse("unavailable", {"error": str(counts)})]
            return [_sse("counts", counts)]

        return self._stream(request, self.hub.counts(), latest, first=now, debounce=0)

    async def live_work(self, request: Request) -> Response:
        work_id = request.path_params["work_id"]
        marker = f".{work_id}."

        async def state(_batch: list[Any] | None = None) -> list[str]:
            try:
                work = await self.backend.reader.results.get(work_id, fresh=True)
            except NotFoundError:
                return []
            return [_sse("work", {"id": work.id, "status": work.status, "attempt": work.attempt,
                                  "priority": work.priority, "finished": work.status in FINISHED})]

        return self._stream(request, self.hub.events(lambda subject: marker in subject), state, first=state)

    async def live_events(self, request: Request) -> Response:
        try:
            search = parse(request.query_params.get("q", ""))
        except ValidationError as error:
            return self.error_page(request, 400, str(error))

        async def feed(batch: list[Any]) -> list[str]:
            items = [_feed_item(subject, data) for subject, data in batch]
            return [_sse("event", item) for item in items if _feed_matches(item, search)]

        return self._stream(request, self.hub.events(lambda _subject: True), feed)

    # -- JSON API ---------------------------------------------------------------------------------

    async def api_works(self, request: Request) -> Response:
        search, page, size, order = self._search_args(request)
        works, total = await self.backend.search(search, limit=size, offset=(page - 1) * size, order=order)
        return JSONResponse({"total": total, "page": page, "size": size, "order": order,
                             "works": [plain(w) for w in works]})

    async def api_count(self, request: Request) -> Response:
        search = parse(request.query_params.get("q", ""))
        return JSONResponse({"count": await self.backend.reader.results.count(**search.filters(), fresh=True)})

    async def api_work(self, request: Request) -> Response:
        work = await self.backend.reader.results.get(request.path_params["work_id"], fresh=True)
        return JSONResponse(plain(work))

    async def api_history(self, request: Request) -> Response:
        history = await self.backend.reader.results.history(request.path_params["work_id"], fresh=True)
        return JSONResponse({"events": [{"seq": r.seq, "subject": r.subject, **plain(r.event)} for r in history]})

    async def api_pipelines(self, request: Request) -> Response:
        return JSONResponse({"pipelines": await self.backend.reader.results.pipelines(fresh=True)})

    async def api_products(self, request: Request) -> Response:
        work_id = request.path_params["work_id"]
        await self.backend.reader.results.get(work_id, fresh=True)  # 404 for a work that does not exist
        files = await self.backend.reader.products.list(work_id)
        return JSONResponse({"files": [{**plain(f), "href": _file_href(work_id, f.name)} for f in files]})

    async def file(self, request: Request) -> Response:
        """One archived file of one work: a plot shown inline, or any file downloaded.

        Only what the work's outcome recorded as archived is served (looked up by name in
        its own records, never a path or URI from the request); the bytes are checked
        against the recorded sha256 as they stream, and a mismatch breaks the download
        instead of completing it. Served files may never run script in the UI's origin
        (``Content-Security-Policy: sandbox``; an SVG opened on its own is inert)."""
        work_id, name = request.path_params["work_id"], request.path_params["name"]
        files = {f.name: f for f in await self.backend.reader.products.list(work_id)}
        item = files.get(name)
        if item is None:
            return self.error_page(request, 404, f"work {work_id} recorded no product or plot named {name!r}")
        if item.uri is None or item.storage is None:
            why = ("was deleted when archived (method delete) or removed since" if item.method != "bypass"
                   else f"was not archived (method bypass): it is {item.path} on the machine that ran it")
            return self.error_page(request, 404, f"{name} {why}")
        inline = item.kind == "plot" and _image_type(name) is not None and "download" not in request.query_params
        headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
                   "Cache-Control": "private, max-age=3600",
                   "Content-Disposition": ("inline" if inline else "attachment") + f"; filename*=UTF-8''{quote(name)}"}
        if item.size is not None:
            headers["Content-Length"] = str(item.size)
        if item.sha256 is not None:
            headers["X-Checksum-Sha256"] = item.sha256
        return StreamingResponse(self._verified(item), headers=headers,
                                 media_type=(_image_type(name) if inline else None) or "application/octet-stream")

    async def _verified(self, item: Any) -> AsyncIterator[bytes]:
        digest = hashlib.sha256()
        async for chunk in self.backend.reader.products.open(item.uri):
            digest.update(chunk)
            yield chunk
        if item.sha256 is not None and digest.hexdigest() != item.sha256:
            log.error("%s: sha256 %s differs from the recorded %s; download broken off", item.uri,
                      digest.hexdigest(), item.sha256)
            raise ChecksumMismatchError(f"{item.uri}: the stored bytes differ from the recorded sha256")

    async def api_schema(self, request: Request) -> Response:
        return JSONResponse(openapi.SCHEMA)

    async def api_bulk(self, request: Request) -> Response:
        form = await self.form(request)
        session = await self.acting_session(request, form)
        if isinstance(session, Response):
            return session
        search = parse(form.get("q", ""))
        if form.get("action") != "cancel":
            raise ValidationError("action", "the bulk action is cancel")
        ids = await self.backend.matching_ids(search)
        report = await self.backend.cancel_many(session.user, ids, form.get("reason"))
        return JSONResponse({"summary": report.summary(), "done": report.done, "changed": report.changed,
                             "refused": report.refused})

    # -- the ASGI app -----------------------------------------------------------------------------

    def routes(self) -> list[Any]:
        return [
            Route("/", self.dashboard),
            Route("/works", self.works),
            Route("/works/{work_id}", self.work),
            Route("/works/{work_id}/files/{name}", self.file),
            Route("/works/{work_id}/{action}", self.act, methods=["POST"]),
            Route("/bulk", self.bulk, methods=["GET", "POST"]),
            Route("/events", self.events),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/live/counts", self.live_counts),
            Route("/live/events", self.live_events),
            Route("/live/works/{work_id}", self.live_work),
            Route("/api/openapi.json", self.api_schema),
            Route("/api/works", self.api_works),
            Route("/api/count", self.api_count),
            Route("/api/pipelines", self.api_pipelines),
            Route("/api/works/{work_id}", self.api_work),
            Route("/api/works/{work_id}/history", self.api_history),
            Route("/api/works/{work_id}/products", self.api_products),
            Route("/api/works/{work_id}/{action}", self.act, methods=["POST"]),
            Route("/api/bulk", self.api_bulk, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    async def guard(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Who is asking: a session (or, without users, the local operator); the login page
        for anyone else; errors of the search or of workflow as pages, not tracebacks."""
        path = request.url.path
        new_token: str | None = None
        if self.settings.users is None and path.startswith(("/api/", "/live/", "/static/")):
            request.state.session = self.session(request)  # a script's reads open no session (nor keep one)
        elif self.settings.users is None:
            request.state.session, new_token = self._local_session(request)
        else:
            request.state.session = self.session(request)
            if request.state.session is None and not (path in ("/login",) or path.startswith("/static/")):
                if path.startswith(("/api/", "/live/")) or request.method != "GET":
                    return JSONResponse({"error": "log in first"}, status_code=401)
                return RedirectResponse("/login?" + urlencode({"next": str(request.url.path) + (
                    "?" + request.url.query if request.url.query else "")}), status_code=303)
        try:
            response = await call_next(request)
        except ValidationError as error:
            response = self.error_page(request, 400, str(error))
        except NotFoundError as error:
            response = self.error_page(request, 404, str(error))
        except WorkflowError as error:
            response = self.error_page(request, 503, str(error))
        if new_token is not None:
            _set_cookie(response, new_token, request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
        return response


#: Pictures a browser shows inline, by file extension.
IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
               "svg": "image/svg+xml", "webp": "image/webp"}


def _image_type(name: str) -> str | None:
    return IMAGE_TYPES.get(name.rsplit(".", 1)[-1].lower()) if "." in name else None


def _file_href(work_id: str, name: str) -> str:
    return f"/works/{work_id}/files/{quote(name, safe='')}"


def _set_cookie(response: Response, token: str, request: Request) -> None:
    """The session cookie; ``Secure`` when the browser came by https (a TLS proxy in front
    says so with ``X-Forwarded-Proto``, which uvicorn trusts from this host only)."""
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")


def _int(text: str | None, default: int, name: str) -> int:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValidationError(name, f"{name} is a whole number, not {text!r}") from None


def _sse(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


def _feed_item(subject: str, data: bytes) -> dict[str, Any]:
    """An event as the live feed shows it: subject parts and a few fields of its JSON."""
    parts = subject.split(".")
    item: dict[str, Any] = {"pipeline": parts[1] if len(parts) > 1 else "", "id": parts[2] if len(parts) > 2 else "",
                            "type": parts[3] if len(parts) > 3 else "", "subject": subject}
    with contextlib.suppress(msgspec.DecodeError, ValueError):
        event = msgspec.json.decode(data)
        if isinstance(event, dict):
            item.update(time=event.get("time"), by=event.get("by"), type=event.get("type") or item["type"])
    return item


def _feed_matches(item: dict[str, Any], search: Search) -> bool:
    if search.pipeline and item["pipeline"] not in search.pipeline:
        return False
    return search.id_prefix is None or str(item["id"]).startswith(search.id_prefix)


def create_app(backend: Backend, settings: WebSettings, *, manage_backend: bool = True) -> Starlette:
    """The ASGI app; with ``manage_backend`` it opens and closes the backend's connections."""
    web = WebApp(backend, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if manage_backend:
            await backend.open()
        await web.start()
        try:
            yield
        finally:
            await web.stop()
            if manage_backend:
                await backend.close()

    app = Starlette(routes=web.routes(), lifespan=lifespan,
                    middleware=[Middleware(BaseHTTPMiddleware, dispatch=web.guard)])
    app.state.web = web
    return app
