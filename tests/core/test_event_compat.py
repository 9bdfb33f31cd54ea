"""Events already in the log keep decoding, whatever the entry points now refuse.

A Work refuses fields it does not have, and a deposit refuses sites its host does not know;
but the events embed the Work, and an event the log accepted once must stay readable by
every reader, on any host, forever (issue 18 §2, issue 19 §5).
"""

from __future__ import annotations

import msgspec
import pytest

from workflow.core import events as ev
from workflow.core.errors import ValidationError
from workflow.core.fold import fold
from workflow.core.work import Work
from workflow.results import projection


def deposited_json(**work_changes) -> bytes:
    """A Deposited as an older (or another host's) writer put it in the log."""
    work = {**msgspec.to_builtins(Work(pipeline="alpha")), **work_changes}
    return msgspec.json.encode({
        "type": "deposited", "work_id": "W1", "pipeline": "alpha", "time": 1.0, "v": 1, "work": work,
    })


def test_an_old_event_whose_work_has_a_field_this_code_lacks_still_decodes():
    data = deposited_json(mentions={"slack": "#frb"}, priority=4)
    event = ev.decode(data)
    assert isinstance(event, ev.Deposited)
    assert event.work.priority == 4 and not hasattr(event.work, "mentions")
    state = fold([event])
    assert state is not None and state.status == "queued" and state.priority == 4
    projection.decode(data)  # the read model takes it too (no ValidationError)


def test_an_old_event_with_a_field_of_its_own_this_code_lacks_still_decodes():
    data = msgspec.json.encode({
        **msgspec.json.decode(deposited_json()), "origin": "an older writer", "v": 1,
    })
    assert isinstance(ev.decode(data), ev.Deposited)
    projection.decode(data)


def test_an_event_whose_site_this_host_does_not_know_decodes(monkeypatch):
    monkeypatch.delenv("WORKFLOW_SITES", raising=False)
    data = deposited_json(site="nowhere")
    event = ev.decode(data)
    assert isinstance(event, ev.Deposited) and event.work.site == "nowhere"
    state = fold([event])
    assert state is not None and state.site == "nowhere"
    projection.decode(data)
    row = {name: getattr(state, name) for name in projection.WORK_FIELDS}
    assert projection.row_to_work(row).site == "nowhere"  # what a reader's `ls` builds


def test_a_work_breaking_its_type_is_still_refused_at_decoding():
    """Leniency is for fields and sites, not for values no reader can hold."""
    with pytest.raises(ValidationError):
        ev.decode(deposited_json(priority=9))
    with pytest.raises(ValidationError):
        ev.decode(deposited_json(pipeline="has space"))


def test_a_schedule_whose_site_the_server_does_not_know_still_fires(monkeypatch):
    """The server fires schedules added on hosts that knew the site: their works are built
    from the log, not deposited through the site check."""
    from workflow.core import schedules as sch

    monkeypatch.delenv("WORKFLOW_SITES", raising=False)
    work = {**msgspec.to_builtins(Work(pipeline="alpha")), "site": "nowhere", "mentions": True}
    data = msgspec.json.encode({"type": "scheduleadded", "name": "nightly", "time": 1.0, "v": 1,
                                "schedule": "@every 1h", "work": work})
    added = sch.decode(data)
    assert isinstance(added, sch.ScheduleAdded)
    fired = sch.firing_work(added, 3600.0)
    assert (fired.site, fired.status, fired.user) == ("nowhere", "queued", "schedule:nightly")
