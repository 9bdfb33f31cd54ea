"""The web UI over plain HTTP (no browser): search errors, the JSON API and its schema,
bulk cancel with confirmation, logins of web users, and the no-login loopback rule."""

from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from webserver import Served, _env, serving, serving_secured, start_server, stop

from workflow.web.chart import per_minute_chart
from workflow.web.users import authenticate, parse_users, user_line

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serving(tmp_path)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Served]:
    yield from serving_secured(tmp_path)


class Browser:
    """urllib with a cookie jar: a session as a browser keeps it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def csrf(self, path: str = "/") -> str:
        _, page = self.request(path)
        match = re.search(r'data-csrf="([^"]+)"', page)
        assert match, page[:500]
        return match.group(1)


def test_a_bad_search_is_a_400_page_naming_the_term(served: Served) -> None:
    status, page = served.get("/works?q=" + urllib.parse.quote("colour:<red>"))
    assert status == 400
    assert "unknown key &#39;colour&#39;" in page and "<red>" not in page
    status, answer = served.get("/api/works?q=status:nonsense")
    assert status == 400 and "no status nonsense" in json.loads(answer)["error"]
    assert served.get("/works/01NOSUCHWORK0000000000000")[0] == 404


def test_the_json_api_answers_from_the_results_service_and_has_a_schema(served: Served) -> None:
    ids = served.deposit("beta", "--count", "3", "--tag", "nightly")
    served.deposit("alpha")
    status, schema = served.get("/api/openapi.json")
    assert status == 200 and json.loads(schema)["openapi"].startswith("3.")
    assert "/api/works/{work_id}/cancel" in json.loads(schema)["paths"]
    answer = json.loads(served.get("/api/works?q=" + urllib.parse.quote("pipeline:beta tag:nightly") + "&size=25")[1])
    assert answer["total"] == 3 and sorted(w["id"] for w in answer["works"]) == sorted(ids)
    assert json.loads(served.get("/api/count?q=pipeline:alpha")[1]) == {"count": 1}
    assert json.loads(served.get(f"/api/works/{ids[0]}")[1])["tags"] == ["nightly"]
    history = json.loads(served.get(f"/api/works/{ids[0]}/history")[1])["events"]
    assert [e["type"] for e in history] == ["deposited"]
    assert json.loads(served.get("/api/pipelines")[1])["pipelines"]["beta"]["queued"] == 3


def test_works_pages_sort_and_count(served: Served) -> None:
    ids = served.deposit("gamma", "--count", "30")
    status, page = served.get("/works?q=pipeline:gamma&size=25&order=id")
    assert status == 200 and "30 works" in page and "page 1 of 2" in page
    assert re.findall(r'href="/works/([0-9A-Z]{26})"', page) == sorted(ids)[:25]
    _, second = served.get("/works?q=pipeline:gamma&size=25&order=id&page=2")
    assert re.findall(r'href="/works/([0-9A-Z]{26})"', second) == sorted(ids)[25:]
    assert served.get("/works?q=pipeline:gamma&order=colour")[0] == 400


def test_a_works_page_links_the_works_waiting_on_it_and_the_api_finds_them(served: Served) -> None:
    [first] = served.deposit("alpha")
    [other] = served.deposit("alpha")
    waiting = served.deposit("beta", "--after", first) + served.deposit("gamma", "--after", other, "--after", first)
    status, page = served.get(f"/works/{first}")
    assert status == 200 and "Waiting on this work" in page
    listed = re.search(r'<ul id="followers">(.*?)</ul>', page, re.S).group(1)
    assert sorted(re.findall(r'href="/works/([0-9A-Z]{26})"', listed)) == sorted(waiting)
    assert f'href="/works?q=after%3A{first}"' in page  # all of them, as a search
    _, unrelated = served.get(f"/works/{waiting[0]}")
    assert 'id="followers"' not in unrelated  # nothing waits on it
    answer = json.loads(served.get(f"/api/works?q=after:{other}")[1])
    assert answer["total"] == 1 and [w["id"] for w in answer["works"]] == [waiting[1]]
    assert json.loads(served.get(f"/api/count?q=after:{first}")[1]) == {"count": 2}


def test_bulk_cancel_confirms_the_count_then_cancels_each_as_the_web_user(served: Served) -> None:
    ids = served.deposit("beta", "--count", "4")
    keep = served.deposit("alpha")
    client = Browser(served.web_url)
    status, page = client.request("/bulk?q=pipeline:beta")
    assert status == 200 and "Cancel 4 works?" in page
    token = client.csrf("/bulk?q=pipeline:beta")
    status, page = client.request("/bulk", {"csrf": token, "q": "pipeline:beta", "action": "cancel", "expected": "3"})
    assert status == 409 and "finds 4 works, not the 3" in page  # what changed since the confirmation is not acted on
    assert all(served.work(i)["status"] == "queued" for i in ids)
    status, page = client.request("/bulk", {"csrf": token, "q": "pipeline:beta", "action": "cancel", "expected": "4"})
    assert status == 200 and "cancelled 4" in page
    for work_id in ids:
        assert served.work(work_id)["status"] == "cancelled"
        assert "web:local" in served.workflow("history", work_id, "--json").stdout
    assert served.work(keep[0])["status"] == "queued"
    status, _ = client.request("/bulk", {"csrf": "forged", "q": "pipeline:alpha", "action": "cancel"})
    assert status == 403 and served.work(keep[0])["status"] == "queued"


def test_requeue_and_priority_from_the_api(served: Served) -> None:
    [work_id] = served.deposit("alpha", "--priority", "2")
    client = Browser(served.web_url)
    token = client.csrf()
    status, answer = client.request(f"/api/works/{work_id}/priority", {"csrf": token, "priority": "5"})
    assert status == 200 and json.loads(answer)["by"] == "web:local"
    assert served.work(work_id)["priority"] == 5
    status, answer = client.request(f"/api/works/{work_id}/priority", {"csrf": token, "priority": "9"})
    assert status == 400 and "priority" in json.loads(answer)["error"]
    assert client.request(f"/api/works/{work_id}/requeue", {"csrf": token})[0] == 409  # queued: nothing to retry
    assert client.request(f"/api/works/{work_id}/cancel", {"csrf": token})[0] == 200
    assert client.request(f"/api/works/{work_id}/requeue", {"csrf": token})[0] == 200
    assert served.work(work_id)["status"] == "queued"


def test_a_named_web_user_logs_in_and_acts_under_their_name(secured: Served, tmp_path: Path) -> None:
    added = secured.workflow("secure", "web-user", str(tmp_path / "secure"), "ann", "--role", "operator").stdout
    password = re.search(r"password \(shown once\): (\S+)", added).group(1)
    # The file is read at start: a new user logs in after a restart.
    stop(secured.process)
    again = start_server(tmp_path, "--config", str(tmp_path / "secure" / "nats.conf"))
    again.env.update({**secured.env, "WORKFLOW_NATS_URL": again.nats_url})
    try:
        [work_id] = again.deposit("alpha")
        client = Browser(again.web_url)
        assert client.request("/")[0] == 200 and "Log in" in client.request("/")[1]  # sent to the login page
        status, _ = client.request("/login", {"user": "ann", "password": password, "next": f"/works/{work_id}"})
        assert status == 200
        token = client.csrf(f"/works/{work_id}")
        assert client.request(f"/works/{work_id}/cancel", {"csrf": token})[0] == 200
        assert "web:ann" in again.workflow("history", work_id, "--json").stdout
    finally:
        stop(again.process)


@pytest.mark.parametrize("command", [
    ["web", "--host", "0.0.0.0", "--port", "0", "--nats", "nats://127.0.0.1:1"],
    ["server", "--port", "-1", "--web-port", "0", "--web-host", "0.0.0.0"],
])
def test_without_users_the_ui_refuses_to_listen_beyond_loopback(tmp_path: Path, command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "workflow.cli", *command, *(
        ["--data-dir", str(tmp_path / "data")] if command[0] == "server" else [])],
        capture_output=True, text=True, timeout=60, env=_env(), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "127.0.0.1 only" in done.stderr + done.stdout
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_workflow_web_runs_standalone_against_any_nats(served: Served, tmp_path: Path) -> None:
    served.deposit("alpha", "--count", "2")
    log = tmp_path / "web.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "workflow.cli", "web", "--port", "0", "--nats",
                                    served.nats_url], stdout=out, stderr=subprocess.STDOUT, env=_env())
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"workflow web UI on (http://\S+?)/? ", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with urllib.request.urlopen(match.group(1) + "/", timeout=20) as response:
            page = response.read().decode()
        assert 'data-pipeline="alpha"' in page and "no login" in page
    finally:
        stop(process)


def test_web_users_file_and_passwords() -> None:
    import bcrypt

    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    users = parse_users("# comment\n" + user_line("ann", "operator", hashed) + user_line("bob", "viewer", hashed))
    assert authenticate(users, "ann", "secret").may_act
    assert not authenticate(users, "bob", "secret").may_act
    assert authenticate(users, "ann", "wrong") is None and authenticate(users, "eve", "secret") is None
    with pytest.raises(ValueError, match="line 1"):
        parse_users("ann admin $2b$xyz\n")
    with pytest.raises(ValueError, match="name"):
        user_line("a b", "viewer", hashed)


def test_the_chart_scales_to_the_busiest_minute() -> None:
    chart = per_minute_chart([0, 5, 10], width=300, height=100)
    assert [bar.height for bar in chart.bars] == [0, 50, 100] and chart.peak == 10 and chart.total == 15
    assert [bar.minutes_ago for bar in chart.bars] == [3, 2, 1]
    assert per_minute_chart([0, 0]).peak == 0


def test_sessions_expire_and_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from workflow.web import users

    monkeypatch.setattr(users, "MAX_SESSIONS", 3)
    sessions = users.Sessions(lifetime=60)
    tokens = [sessions.open(f"u{i}", "viewer")[0] for i in range(5)]
    assert [sessions.get(t) is not None for t in tokens] == [False, False, True, True, True]
    token, session = sessions.open("ann", "operator")
    assert users.csrf_ok(session, session.csrf) and not users.csrf_ok(session, "x") and not users.csrf_ok(session, None)
    sessions.close(token)
    assert sessions.get(token) is None
    expired = users.Sessions(lifetime=-1)
    assert expired.get(expired.open("bob", "viewer")[0]) is None


def test_workflow_web_with_secure_logs_in_to_nats_as_the_operator_and_its_users_log_in(
        secured: Served, tmp_path: Path) -> None:
    [work_id] = secured.deposit("alpha")
    log = tmp_path / "web-secure.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "workflow.cli", "web", "--port", "0", "--host", "0.0.0.0",
                                    "--secure", str(tmp_path / "secure"), "--nats", secured.nats_url],
                                   stdout=out, stderr=subprocess.STDOUT, env=_env())
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"workflow web UI on http://\S+?:(\d+)/? ", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        client = Browser(f"http://127.0.0.1:{match.group(1)}")
        assert client.request("/api/count")[0] == 401  # users: nothing without a login
        status, _ = client.request("/login", {"user": "operator", "password": secured.passwords["operator"]})
        assert status == 200
        token = client.csrf(f"/works/{work_id}")
        status, answer = client.request(f"/api/works/{work_id}/cancel", {"csrf": token})
        assert status == 200, answer  # NATS let the web process cancel: it logged in as the operator role
        assert secured.work(work_id)["status"] == "cancelled"
    finally:
        stop(process)


def _log_in(base: str, user: str, password: str, **headers: str) -> tuple[int, str | None, str]:
    """POST /login once, not following the redirect: the status, Retry-After (Set-Cookie
    after a success) and the page."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    data = urllib.parse.urlencode({"user": user, "password": password}).encode()
    request = urllib.request.Request(base + "/login", data=data, headers=headers)
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as response:
            return response.status, response.headers.get("Retry-After"), response.read().decode()
    except urllib.error.HTTPError as error:
        header = "Set-Cookie" if error.code == 303 else "Retry-After"
        return error.code, error.headers.get(header), error.read().decode()


def test_failed_logins_lock_the_name_then_the_address_for_a_while(secured: Served) -> None:
    base, passwords = secured.web_url, secured.passwords
    for _ in range(4):
        status, _, page = _log_in(base, "viewer", "wrong")
        assert status == 401 and "wrong name or password" in page
    status, retry_after, page = _log_in(base, "viewer", "wrong")  # the fifth within 15 minutes
    assert status == 429 and retry_after is not None and 800 < int(retry_after) <= 900
    assert "too many failed logins for viewer" in page and "15 min" in page
    status, retry_after, _ = _log_in(base, "viewer", passwords["viewer"])
    assert status == 429 and retry_after is not None  # locked: even the right password is not checked
    status, cookie, _ = _log_in(base, "operator", passwords["operator"])  # another name logs in
    assert status == 303 and cookie is not None and "httponly" in cookie.lower() and "secure" not in cookie.lower()
    status, cookie, _ = _log_in(base, "operator", passwords["operator"], **{"X-Forwarded-Proto": "https"})
    assert status == 303 and cookie is not None and "secure" in cookie.lower()  # behind a TLS proxy on this host
    failures = 5
    while failures < 19:  # guessing names from one address: 20 failures lock the address
        assert _log_in(base, f"guess-{failures}", "wrong")[0] == 401
        failures += 1
    status, _, page = _log_in(base, "guess-last", "wrong")
    assert status == 429 and "from your address" in page
    status, _, page = _log_in(base, "operator", passwords["operator"])
    assert status == 429 and "from your address" in page
    assert "too many failed logins from 127.0.0.1" in secured.log.read_text()  # the operator can see why
