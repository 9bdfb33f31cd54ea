"""Bulk actions from the works view (``B``), driven by textual's pilot against a real
server, projector and results service: the same selection and writes as the CLI's
``workflow cancel --pipeline P --status queued``."""

from __future__ import annotations

from test_tui import app_for, rows, text_of, told, until
from textual.widgets import Input

from conftest import eventually
from workflow import Work
from workflow.tui.dialogs import BulkScreen, CancelScreen, ConfirmScreen, HelpScreen, PriorityScreen
from workflow.tui.works import WorksScreen

LARGE = (140, 32)
#: What ``workflow cancel --status queued`` says (the selection's check).
PIPELINE_REFUSAL = (
    "pipeline: a bulk action by filter must name its pipeline(s): it never spans every pipeline by accident"
)


async def search(pilot, app, text: str, shown: int) -> None:
    await pilot.press("w")
    await pilot.press("slash")
    await pilot.press(*text, "enter")
    assert await until(pilot, lambda: len(rows(app, "#works")) == shown)


async def statuses(client, ids: list[str]) -> list[str]:
    return [(await client.get(work_id)).status for work_id in ids]


async def test_bulk_cancel_of_a_search_cancels_every_matching_work_and_shows_the_summary(
    client, results_service, nats_url
):
    queued = await client.deposit([Work(pipeline="p") for _ in range(7)])
    [other] = await client.deposit([Work(pipeline="q")])
    [running] = await client.deposit([Work(pipeline="p", priority=5)])
    assert (await client.withdraw("p", timeout=10)).id == running  # highest priority first: not queued now
    app = app_for(nats_url)
    async with app.run_test(size=LARGE) as pilot:
        said = told(app)
        await search(pilot, app, "pipeline:p status:queued", 7)
        await pilot.press("question_mark")  # the help lists the key
        assert await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "B  Bulk action on the search" in text_of(app, "#keys")
        await pilot.press("escape")
        await pilot.press("B")
        assert await until(pilot, lambda: isinstance(app.screen, BulkScreen))
        assert "7 works (pipeline:p status:queued) match" in str(app.screen.question)
        await pilot.press("c")
        assert await until(pilot, lambda: isinstance(app.screen, CancelScreen))
        assert app.screen.question == "Cancel 7 works (pipeline:p status:queued)?"
        await pilot.press(*"cleanup", "enter")
        assert await until(pilot, lambda: "cancelled 7" in said)
        assert await until(pilot, lambda: len(rows(app, "#works")) == 0)  # the search shows none queued now

    assert await statuses(client, queued) == ["cancelled"] * 7
    assert await statuses(client, [other, running]) == ["queued", "running"]
    cancelled = [(await client.history(work_id))[-1] for work_id in queued]
    assert {(type(e).__name__, e.reason) for e in cancelled} == {("Cancelled", "cleanup")}
    # each its own event, by the TUI's user, as a single cancel from the TUI records it
    assert {e.by for e in cancelled} == {app.source.client.name}  # type: ignore[union-attr]

    async def all_cancelled_in_the_read_model() -> bool:
        return await client.results.count(pipeline=["p"], status=["cancelled"], fresh=True) == 7

    assert await eventually(all_cancelled_in_the_read_model, 10)


async def test_declining_the_bulk_dialogs_changes_nothing(client, results_service, nats_url):
    queued = await client.deposit([Work(pipeline="p", priority=2) for _ in range(3)])
    app = app_for(nats_url)
    async with app.run_test(size=LARGE) as pilot:
        said = told(app)
        await search(pilot, app, "pipeline:p status:queued", 3)
        await pilot.press("B")
        assert await until(pilot, lambda: isinstance(app.screen, BulkScreen))
        await pilot.press("escape")  # leave them
        assert isinstance(app.screen, WorksScreen)
        await pilot.press("B")
        assert await until(pilot, lambda: isinstance(app.screen, BulkScreen))
        await pilot.press("d")
        assert await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")  # not confirmed
        assert isinstance(app.screen, WorksScreen)
        await pilot.press("B")
        assert await until(pilot, lambda: isinstance(app.screen, BulkScreen))
        await pilot.press("c")
        assert await until(pilot, lambda: isinstance(app.screen, CancelScreen))
        await pilot.press("escape")  # keep them
        assert isinstance(app.screen, WorksScreen)
        await pilot.pause(0.5)
        assert said == []
    assert await statuses(client, queued) == ["queued"] * 3
    assert [len(await client.history(work_id)) for work_id in queued] == [1, 1, 1]


async def test_bulk_requeue_at_a_new_priority(client, results_service, nats_url):
    cancelled = await client.deposit([Work(pipeline="p", priority=2) for _ in range(4)])
    await client.cancel_many(pipeline="p", status="queued")
    app = app_for(nats_url)
    async with app.run_test(size=LARGE) as pilot:
        said = told(app)
        await search(pilot, app, "pipeline:p status:cancelled", 4)
        await pilot.press("B")
        assert await until(pilot, lambda: isinstance(app.screen, BulkScreen))
        await pilot.press("p")
        assert await until(pilot, lambda: isinstance(app.screen, PriorityScreen))
        assert app.screen.query_one("#priority", Input).value == ""  # each had its own: none is proposed
        await pilot.press("5", "enter")
        assert await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.screen.question == "Requeue 4 works (pipeline:p status:cancelled) at priority 5?"
        await pilot.press("y")
        assert await until(pilot, lambda: "requeued 4" in said)
    assert [(w.status, w.priority) for w in [await client.get(i) for i in cancelled]] == [("queued", 5)] * 4


async def test_a_search_naming_no_pipeline_is_refused_with_the_clis_message(client, results_service, nats_url):
    queued = await client.deposit([Work(pipeline="p") for _ in range(2)])
    app = app_for(nats_url)
    async with app.run_test(size=LARGE) as pilot:
        said = told(app)
        await search(pilot, app, "status:queued", 2)
        await pilot.press("B")
        assert await until(pilot, lambda: PIPELINE_REFUSAL in said)
        assert isinstance(app.screen, WorksScreen)  # no dialog: nothing to confirm
    assert await statuses(client, queued) == ["queued"] * 2
