"""The web UI in a real browser: Debian's chromium driven by Playwright, against a real
``workflow server --web-port 0`` process (embedded nats-server, projector, web UI)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webserver import Served, launched_chromium, new_page, serving, serving_secured

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launched_chromium()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from new_page(browser)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serving(tmp_path)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Served]:
    yield from serving_secured(tmp_path)


def test_search_open_a_work_cancel_it_and_see_the_status_change_without_reload(served: Served, page: Any) -> None:
    from playwright.sync_api import expect

    [target] = served.deposit("alpha", "--user", "ann", "--tag", "survey")
    served.deposit("alpha", "--user", "bob", "--count", "2")
    page.goto(served.web_url + "/")
    expect(page.locator("#search")).to_be_focused()  # `/` is where searching starts
    page.locator("body").click()
    page.keyboard.press("/")
    expect(page.locator("#search")).to_be_focused()
    page.keyboard.type("user:ann tag:survey")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/works\?q=user%3Aann\+tag%3Asurvey"))
    expect(page.locator("#count")).to_contain_text("1 work")
    page.locator(f"a.id[href='/works/{target}']").click()
    page.wait_for_url(f"**/works/{target}")
    expect(page.locator("#status")).to_have_text("queued")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    page.locator("#cancel").click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text(f"Cancel work {target}")
    page.locator("#confirm-reason").fill("wrong calibration")
    page.locator("#confirm-yes").click()

    expect(page.locator("#status")).to_have_text("cancelled", timeout=15_000)
    expect(page.locator("#cancel-form")).to_be_hidden()
    cancelled = page.locator("#timeline .ev-cancelled")  # the timeline follows the log too
    expect(cancelled).to_contain_text("wrong calibration", timeout=15_000)
    expect(cancelled).to_contain_text("by web:local")
    assert page.evaluate("window.__sameDocument") is True
    history = served.workflow("history", target, "--json").stdout
    assert '"cancelled"' in history.lower() and "web:local" in history and "wrong calibration" in history
    # The back button returns to the search: the URL is the search.
    page.go_back()
    page.wait_for_url(re.compile(r"/works\?q=user%3Aann"))
    expect(page.locator("#count")).to_contain_text("1 work")


def test_a_viewer_sees_no_cancel_button_and_a_forged_post_is_refused(secured: Served, page: Any) -> None:
    from playwright.sync_api import expect

    [target] = secured.deposit("alpha")
    page.goto(secured.web_url + f"/works/{target}")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("input[name=user]", "viewer")
    page.fill("input[name=password]", "not the password")
    page.click("form.login button")
    expect(page.locator(".error")).to_have_text("wrong name or password")
    page.fill("input[name=user]", "viewer")
    page.fill("input[name=password]", secured.passwords["viewer"])
    page.click("form.login button")
    page.wait_for_url(f"**/works/{target}")
    expect(page.locator("#status")).to_have_text("queued")
    expect(page.locator(".user")).to_have_text("viewer (viewer)")
    assert page.locator("#cancel").count() == 0 and page.locator("form.act").count() == 0

    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["wf_session"]["httpOnly"] and cookies["wf_session"]["sameSite"] == "Strict"
    csrf = page.evaluate("document.body.dataset.csrf")  # the viewer's own, valid token: still refused
    forged = page.request.post(secured.web_url + f"/works/{target}/cancel", form={"csrf": csrf},
                               headers={"Accept": "application/json"})
    assert forged.status == 403, forged.text()
    assert secured.work(target)["status"] == "queued"


def test_an_operator_acts_and_a_missing_csrf_token_is_refused(secured: Served, page: Any) -> None:
    from playwright.sync_api import expect

    [target] = secured.deposit("alpha")
    page.goto(secured.web_url + "/login")
    page.fill("input[name=user]", "operator")
    page.fill("input[name=password]", secured.passwords["operator"])
    page.click("form.login button")
    page.goto(secured.web_url + f"/works/{target}")
    no_token = page.request.post(secured.web_url + f"/works/{target}/cancel", form={"reason": "x"})
    assert no_token.status == 403
    page.locator("#cancel").click()
    page.locator("#confirm-yes").click()
    expect(page.locator("#status")).to_have_text("cancelled", timeout=15_000)
    assert "web:operator" in secured.workflow("history", target, "--json").stdout


def test_tags_with_markup_render_as_text(served: Served, page: Any) -> None:
    from playwright.sync_api import expect

    script, image = "<script>window.__xss = 1; alert(1)</script>", "<img src=x onerror=\"window.__xss = 2; alert(2)\">"
    [target] = served.deposit("alpha", "--tag", script, "--tag", image, "--user", "<b>mallory</b>")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(served.web_url + f"/works/{target}")
    expect(page.locator("#tags .tag").nth(0)).to_have_text(script)
    expect(page.locator("#tags .tag").nth(1)).to_have_text(image)
    page.goto(served.web_url + "/works?q=" + "pipeline:alpha")
    expect(page.locator("#works .tag").first).to_have_text(script)
    expect(page.locator("#works td", has_text="<b>mallory</b>")).to_have_count(1)
    assert page.locator("#works img").count() == 0 and page.locator("#works b").count() == 0
    assert page.evaluate("window.__xss") is None
    assert dialogs == []


def test_dashboard_at_375_px_has_no_horizontal_scroll(served: Served, browser: Any) -> None:
    from playwright.sync_api import expect

    for pipeline in ("calibration-with-a-rather-long-name", "beamform", "intensity-search-pipeline-2"):
        served.deposit(pipeline, "--count", "2")
    for phone in new_page(browser, width=375, height=800):
        phone.goto(served.web_url + "/")
        expect(phone.locator("#pipelines tbody tr")).to_have_count(3)
        widths = phone.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], widths
        assert phone.locator("svg.chart").bounding_box()["width"] <= 375


def test_dashboard_counts_follow_new_deposits_live(served: Served, page: Any) -> None:
    from playwright.sync_api import expect

    served.deposit("alpha")
    page.goto(served.web_url + "/")
    expect(page.locator("tr[data-pipeline=alpha] td[data-status=queued]")).to_have_text("1")
    page.evaluate("window.__sameDocument = true")
    served.deposit("alpha", "--count", "2")
    served.deposit("beta")
    expect(page.locator("tr[data-pipeline=alpha] td[data-status=queued]")).to_have_text("3", timeout=15_000)
    expect(page.locator("tr[data-pipeline=beta] td[data-status=total]")).to_have_text("1", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True


def test_the_event_feed_shows_new_events_live_filtered_by_pipeline(served: Served, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(served.web_url + "/events?q=pipeline:alpha")
    expect(page.locator("body[data-live=ready]")).to_have_count(1)  # the feed listens from now on
    [shown] = served.deposit("alpha", "--tag", "<i>x</i>")
    served.deposit("beta")
    row = page.locator("#feed tbody tr").first
    expect(row).to_contain_text(shown, timeout=15_000)
    expect(row).to_contain_text("deposited")
    served.workflow("cancel", shown)
    expect(page.locator("#feed tbody tr").first).to_contain_text("cancelled", timeout=15_000)
    expect(page.locator("#feed tbody tr")).to_have_count(2)  # beta's deposit is filtered out
    page.locator("#feed tbody tr a.id").first.click()
    page.wait_for_url(f"**/works/{shown}")


def test_bulk_cancel_from_a_search_with_confirmation(served: Served, page: Any) -> None:
    from playwright.sync_api import expect

    ids = served.deposit("beta", "--count", "5", "--tag", "bad-calibration")
    served.deposit("beta", "--tag", "fine")
    page.goto(served.web_url + "/works?q=tag:bad-calibration")
    page.locator("#bulk-cancel").click()
    expect(page.locator("h1")).to_have_text("Cancel 5 works?")
    page.fill("input[name=reason]", "calibration was wrong")
    page.locator("#bulk-confirm").click()
    expect(page.locator("#bulk-report")).to_contain_text("cancelled 5")
    assert {served.work(i)["status"] for i in ids} == {"cancelled"}
    assert served.get("/api/count?q=" + "pipeline:beta%20status:queued")[1] == '{"count":1}'


def test_a_finished_work_shows_its_results_and_traceback_and_the_chart_counts_it(
        served: Served, browser: Any, tmp_path: Path) -> None:
    """Works run by a real worker: the dashboard's chart has their minute, a succeeded work's
    page its results as JSON, a failed one's timeline its error and traceback. The pictures
    go into $WORKFLOW_SCREENSHOT_DIR when set (docs/web-dashboard.png, docs/web-work.png)."""
    from playwright.sync_api import expect

    good = served.deposit("sample-pipeline", "-P", "a=20", "-P", "b=22", "--tag", "survey", "--user", "ann",
                          "--function", "workflow.examples.add_results", "--count", "3")
    [bad] = served.deposit("sample-pipeline", "-P", "message=calibration file missing", "--retries", "0",
                           "--function", "workflow.examples.fail")
    served.deposit("beamform", "--count", "4")
    served.workflow("run", "sample-pipeline", "--lives", "4", cwd=tmp_path)
    for page in new_page(browser, width=1280, height=900):
        page.goto(served.web_url + "/")
        expect(page.locator("tr[data-pipeline=sample-pipeline] td[data-status=success]")).to_have_text("3")
        heights = page.eval_on_selector_all("svg.chart rect", "bars => bars.map(b => +b.getAttribute('height'))")
        assert len(heights) == 60 and max(heights) > 0, heights
        page.screenshot(path=str(tmp_path / "web-dashboard.png"), full_page=True)
        page.goto(served.web_url + f"/works/{good[0]}")
        expect(page.locator("#status")).to_have_text("success")
        expect(page.locator("#results")).to_contain_text('"sum": 42')
        page.goto(served.web_url + f"/works/{bad}")
        expect(page.locator("#timeline .ev-failed pre.error")).to_contain_text("calibration file missing")
        page.locator("#timeline .ev-failed summary").click()
        expect(page.locator("#timeline .ev-failed details pre")).to_contain_text("Traceback")
    target = os.environ.get("WORKFLOW_SCREENSHOT_DIR")
    if target:
        shutil.copy(tmp_path / "web-dashboard.png", Path(target) / "web-dashboard.png")


def test_a_plot_shows_inline_and_a_product_downloads_with_its_recorded_sha256(
        served: Served, page: Any, tmp_path: Path) -> None:
    """The products archive: the worker stores the work's files in the object store; the
    page shows the plot (decoded by the browser) and downloads the product, whose bytes have
    the sha256 the log recorded. Only the work's own archived files are served. The page's
    picture goes into $WORKFLOW_SCREENSHOT_DIR when set (docs/web-work.png)."""
    from playwright.sync_api import expect

    [target] = served.deposit("sample-pipeline", "-P", "name=candidate", "-P", "size=300000", "--tag", "frb",
                              "--function", "workflow.examples.with_products")
    [other] = served.deposit("sample-pipeline", "-P", "name=other", "--function", "workflow.examples.with_products")
    worker = tmp_path / "worker"
    worker.mkdir()
    served.workflow("run", "sample-pipeline", "--lives", "2", cwd=worker)
    recorded = {f["name"]: f for f in json.loads(served.workflow("products", "ls", target, "--json").stdout)}
    assert set(recorded) == {"candidate.dat", "candidate.png"}, recorded

    page.goto(served.web_url + f"/works/{target}")
    expect(page.locator("#status")).to_have_text("success")
    plot = page.locator("figure.plot img")
    expect(plot).to_have_count(1)
    page.wait_for_function("() => document.querySelector('figure.plot img').complete")
    assert plot.evaluate("image => image.naturalWidth") == 32
    expect(page.locator("#products code.sha256")).to_have_text(recorded["candidate.dat"]["sha256"])
    with page.expect_download() as downloading:
        page.locator("#products a.download").click()
    download = downloading.value
    assert download.suggested_filename == "candidate.dat"
    data = Path(download.path()).read_bytes()
    assert len(data) == 300000 and hashlib.sha256(data).hexdigest() == recorded["candidate.dat"]["sha256"]
    target_dir = os.environ.get("WORKFLOW_SCREENSHOT_DIR")
    if target_dir:
        page.screenshot(path=str(Path(target_dir) / "web-work.png"), full_page=True)

    files = served.web_url + f"/works/{target}/files/"
    assert page.request.get(files + "other.dat").status == 404  # another work's file, asked under this id
    assert page.request.get(files + "..%2F..%2Fetc%2Fpasswd").status == 404
    assert page.request.get(served.web_url + f"/works/{other}/files/other.dat").status == 200
    shown = page.request.get(files + "candidate.png")
    assert shown.headers["content-type"] == "image/png" and "sandbox" in shown.headers["content-security-policy"]
    listed = page.request.get(served.web_url + f"/api/works/{target}/products").json()["files"]
    assert {f["name"]: f["sha256"] for f in listed} == {n: f["sha256"] for n, f in recorded.items()}
