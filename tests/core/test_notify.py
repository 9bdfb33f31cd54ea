"""``Work.notify``: its shape and rules, and the messages built from a work (pure)."""

from __future__ import annotations

import pytest

from workflow.core import events as ev
from workflow.core import notify as nt
from workflow.core.errors import ValidationError
from workflow.core.fold import FoldError, evolve, fold
from workflow.core.work import Work


def test_notify_is_a_real_field_kept_in_the_payload_and_through_json():
    work = Work.from_payload({"pipeline": "p", "notify": {
        "slack": {"channel_id": "C1", "member_ids": ["U1"], "message": "done", "results": True, "reply": {"ok": True}},
        "webhook": {"key": "alerts", "method": "PUT", "body": {"text": "{id} {status}"}}, "on": ["failure"]}})
    assert work.notify is not None and work.notify.slack is not None and work.notify.webhook is not None
    assert work.notify.slack.channel_id == "C1" and work.notify.slack.reply == {"ok": True}
    assert work.notify.webhook.method == "PUT" and work.notify.on == ["failure"]
    assert Work.from_payload(work.payload) == work
    assert "notify" not in Work(pipeline="p").payload  # a plain work's payload is the seed's


@pytest.mark.parametrize(("notify", "words"), [
    ({"slack": {"chanel_id": "C1"}}, "notify.slack has no field 'chanel_id'"),
    ({"slack": {}}, "needs a channel_id or member_ids"),
    ({}, "notify needs slack or webhook"),
    ({"slack": {"channel_id": 3}}, "got `int` at notify.slack.channel_id"),
    ({"webhook": {"key": "https://evil.example/x"}}, "at notify.webhook.key"),
    ({"webhook": {"key": "a", "method": "DELETE"}}, "at notify.webhook.method"),
    ({"slack": {"channel_id": "C"}, "on": ["running"]}, "at notify.on"),
])
def test_a_bad_notify_is_refused_in_the_users_words(notify, words):
    made = (lambda: Work(pipeline="p", notify=notify), lambda: Work.from_payload({"pipeline": "p", "notify": notify}))
    for make in made:
        with pytest.raises(ValidationError) as caught:
            make()
        assert caught.value.field == "notify" and words in str(caught.value)


def test_setting_notify_checks_it_too():
    work = Work(pipeline="p")
    work.notify = {"slack": {"channel_id": "C1"}}
    assert isinstance(work.notify, nt.Notify)
    with pytest.raises(ValidationError, match="needs a channel_id"):
        work.notify = {"slack": {"message": "x"}}


def test_a_webhook_key_outside_the_configuration_is_refused():
    notify = nt.parse({"webhook": {"key": "pager"}})
    nt.check_webhook_key(notify, frozenset({"pager"}))
    with pytest.raises(ValidationError, match="unknown webhook key 'pager'; the configured webhooks are: alerts"):
        nt.check_webhook_key(notify, frozenset({"alerts"}))


def _finished(status: str = "failure", **fields) -> Work:
    work = Work(pipeline="p", id="01W", user="<b>ann</b>", notify={"slack": {
        "channel_id": "C1", "member_ids": ["U1"], "message": "<script>alert(1)</script>", "results": True,
        "products": True}}, **fields)
    results = {"error": "bad <input> & more", "reason": "error", "n": "<i>"} if status == "failure" else {"n": 1}
    return Work.from_payload({**work.payload, "status": status, "start": 10.0, "stop": 75.5, "results": results,
                              "products": ["/data/<x>.h5"]})


def test_the_slack_message_says_what_happened_with_every_user_text_escaped():
    facts = nt.facts(_finished(), nt.link_to("https://frb.example/ui", "01W"))
    [body] = nt.slack_messages(facts, _finished().notify.slack)
    text = body["text"]
    assert body["channel"] == "C1" and text.startswith("<@U1> :x: *p* work <https://frb.example/ui/works/01W|01W>")
    assert "failure" in text and "1m05s" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    assert "&lt;b&gt;ann&lt;/b&gt;" in text and "bad &lt;input&gt; &amp; more" in text
    assert '"n": "&lt;i&gt;"' in text and "/data/&lt;x&gt;.h5" in text
    assert body["blocks"][0]["text"]["text"] == text


def test_results_are_trimmed_and_members_alone_get_one_message_each():
    work = _finished("success", retries=1)
    work = Work.from_payload({**work.payload, "results": {"big": "x" * 5000},
                              "notify": {"slack": {"member_ids": ["U1", "U2"], "results": True}}})
    bodies = nt.slack_messages(nt.facts(work), work.notify.slack)
    assert [b["channel"] for b in bodies] == ["U1", "U2"]
    assert len(bodies[0]["text"]) < nt.RESULTS_LIMIT + 300 and "…" in bodies[0]["text"]


def test_a_webhook_body_template_is_filled_with_known_placeholders_only():
    work = _finished()
    hook = nt.Webhook(key="alerts", body={"text": "{pipeline}/{id} {status}: {error} {nope}", "n": [1, "{user}"]})
    body = nt.webhook_body(nt.facts(work), hook)
    assert body == {"text": "p/01W failure: bad <input> & more {nope}", "n": [1, "<b>ann</b>"]}


def test_a_notified_follows_a_final_status_and_changes_nothing_of_the_work():
    common = {"work_id": "01W", "pipeline": "p", "time": 1.0}
    deposited = ev.Deposited(**common, work=Work(pipeline="p", id="01W"))
    started = ev.Started(**common, attempt=1, queue_seq=1)
    ended = ev.Succeeded(**common, attempt=1, results={"x": 1})
    notified = ev.Notified(**common, status="success", ok=True, attempts=2, reply={"slack:C1": {"ok": True}})
    before = fold([deposited, started, ended])
    after = evolve(before, notified)
    assert after == before and after.status == "success"
    deleted = evolve(after, ev.Deleted(**common))
    with pytest.raises(FoldError, match="nothing may follow a Deleted"):
        evolve(deleted, notified)
    with pytest.raises(FoldError, match="never deposited"):
        evolve(None, notified)
    with pytest.raises(FoldError, match="Notified while the work is running; only an ended work is told of"):
        evolve(fold([deposited, started]), notified)


@pytest.mark.parametrize(("status", "outcome"), [("success", "succeeded"), ("failure", "failed"),
                                                 ("cancelled", "was cancelled")])
def test_a_notified_head_still_says_how_the_work_ended(status, outcome):
    """Readers of a work's head alone (bulk actions, cancel, precursors) see through a Notified."""
    from workflow.core.bulk import status_after
    from workflow.core.waits import precursor_outcome

    notified = ev.Notified(work_id="01W", pipeline="p", time=1.0, status=status, ok=True, attempts=1)
    assert status_after(notified) == status and precursor_outcome(notified) == outcome and ev.is_final(notified)
