"""What the client takes in as a Work, against a real nats-server: payloads, unknown
fields, sites this host does not know, and which failures use a retry (issues 18 §2, 19 §5).
"""

from __future__ import annotations

import pytest

import workflow
from workflow import Work
from workflow.core import events as ev
from workflow.core.errors import ValidationError


async def nothing_queued(client: workflow.Client, pipeline: str) -> bool:
    """True if no work of ``pipeline`` can be withdrawn within a second (nothing was deposited)."""
    return await client.withdraw(pipeline, timeout=1.0, poll=0.05) is None


async def test_a_payload_is_deposited_as_the_work_it_describes(client):
    [work_id] = await client.deposit([{"pipeline": "payloads", "parameters": {"a": 1}, "priority": 5}])
    work = await client.get(work_id)
    assert (work.pipeline, work.parameters, work.priority, work.status) == ("payloads", {"a": 1}, 5, "queued")


async def test_a_payload_with_an_unknown_field_is_refused_and_nothing_of_the_call_is_deposited(client):
    good = {"pipeline": "unknown-field"}
    bad = {"pipeline": "unknown-field", "mentions": {"slack": "#frb"}}
    with pytest.raises(ValidationError) as caught:
        await client.deposit([good, bad])
    assert caught.value.field == "mentions"
    assert "a work has no field 'mentions'; its fields are pipeline," in str(caught.value)
    assert await nothing_queued(client, "unknown-field")


async def test_a_payload_breaking_a_rule_is_refused_in_the_users_words(client):
    with pytest.raises(ValidationError, match=r"^priority: priority is 1 \(lowest\) to 5 \(highest\)"):
        await client.deposit({"pipeline": "bad-priority", "priority": 9})
    assert await nothing_queued(client, "bad-priority")


async def test_a_site_this_host_does_not_know_is_refused_at_deposit(client, monkeypatch):
    monkeypatch.delenv("WORKFLOW_SITES", raising=False)
    with pytest.raises(ValidationError, match=r"site: unknown site 'nowhere'; known sites: .*WORKFLOW_SITES"):
        await client.deposit([Work(pipeline="sites"), Work(pipeline="sites", site="nowhere")])
    with pytest.raises(ValidationError, match="unknown site 'nowhere'"):
        await client.deposit({"pipeline": "sites", "site": "nowhere"})
    assert await nothing_queued(client, "sites")


async def test_a_work_deposited_where_its_site_is_known_reads_and_moves_where_it_is_not(client, monkeypatch):
    monkeypatch.setenv("WORKFLOW_SITES", "nowhere")
    [work_id] = await client.deposit(Work(pipeline="sites", site="nowhere"))
    monkeypatch.delenv("WORKFLOW_SITES")
    # This host no longer knows the site: it still reads the work, its history, and may
    # re-prioritise it where it is; it may not send it (or another) to a site it does not know.
    assert (await client.get(work_id)).site == "nowhere"
    assert isinstance((await client.history(work_id))[0], ev.Deposited)
    assert (await client.requeue(work_id, priority=5)).site == "nowhere"
    with pytest.raises(ValidationError, match="unknown site 'elsewhere'"):
        await client.requeue(work_id, site="elsewhere")
    with pytest.raises(ValidationError, match="unknown site 'elsewhere'"):
        await client.add_schedule("nightly", Work(pipeline="sites", site="elsewhere"), every="1h")
    assert await client.schedules() == []


@pytest.mark.parametrize(
    ("config", "reason", "will_retry"),
    [
        (None, "timeout", True),
        ({"retry_on": ["error"]}, "timeout", False),
        ({"retry_on": ["error"]}, "error", True),
        ({"retry_on": ["timeout"]}, "error", False),
        (None, "too-large", False),
    ],
)
async def test_a_failure_retries_as_its_reason_and_the_works_retry_on_say(client, config, reason, will_retry):
    [work_id] = await client.deposit(Work(pipeline="retry-on", retries=2, config=config))
    work = await client.withdraw("retry-on", timeout=10, poll=0.05)
    assert work is not None and work.id == work_id
    failed = await client.fail(work, reason, "it went wrong")
    assert failed.will_retry is will_retry
    assert (await client.get(work_id)).status == ("queued" if will_retry else "failure")


async def test_a_reported_failure_is_final_when_retry_on_leaves_it_out(client):
    [work_id] = await client.deposit(Work(pipeline="reported", retries=3, config={"retry_on": []}))
    work = await client.withdraw("reported", timeout=10, poll=0.05)
    work.status = "failure"
    work.results = {"error": "bad data"}
    await client.update(work)
    [failed] = [e for e in await client.history(work_id) if isinstance(e, ev.Failed)]
    assert (failed.reason, failed.will_retry) == ("reported", False)
    assert await nothing_queued(client, "reported")


async def test_a_lost_attempt_retries_whatever_retry_on_says(nats_url):
    async with workflow.connect(nats_url) as depositor:
        [work_id] = await depositor.deposit(Work(pipeline="lost", retries=1, config={"retry_on": []}))
    crashed = workflow.connect(nats_url)
    await crashed.open()
    assert (await crashed.withdraw("lost", timeout=10, poll=0.05)).id == work_id
    await crashed.close(release=False)  # like a SIGKILL: no heartbeat, no release
    async with workflow.connect(nats_url) as survivor:
        work = await survivor.withdraw("lost", timeout=15, poll=0.1)  # after the 1.5 s lease
        assert work is not None and (work.id, work.attempt) == (work_id, 2)
        [lost] = [e for e in await survivor.history(work_id) if isinstance(e, ev.Failed)]
    assert (lost.reason, lost.will_retry) == ("lost", True)
