"""The search filter is declared once, in the core (issue 20, item 5): ``WorkFilter``'s
fields are the keywords of every caller, the service's wire struct and what its SQL reads,
and a bad value is refused with the message its Work field gives."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import msgspec
import pytest

from workflow.cli.bulk import Selection
from workflow.cli.options import WorkFilters, as_filter
from workflow.core.errors import ValidationError
from workflow.core.filters import FilterValues, SelectionValues, WithdrawFilter, WorkFilter
from workflow.core.work import Work
from workflow.results import queries

FIELDS = set(WorkFilter.__struct_fields__)

#: One value of every filter field, as a caller (and the CLI) may write it. A field added
#: to WorkFilter fails the tests below until it has a sample here, and they then prove it
#: reaches the service's SQL, the client's keywords and the wire.
SAMPLES = {
    "pipeline": "alpha", "status": "queued", "site": "chime", "user": "ann", "tags": "a", "event": 7,
    "since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z", "id_prefix": "01J", "after_id": "01J0",
    "include_deleted": True, "any_tags": "b", "parent": "night-1", "priority": 3, "precursor": "01J1",
}

#: (filter, bad value, the Work field it is checked as, the same value in a Work)
BAD = [
    ("pipeline", "no spaces", "pipeline", "no spaces"),
    ("status", "finished", "status", "finished"),
    ("site", "bad site", "site", "bad site"),
    ("priority", 9, "priority", 9),
    ("tags", [1], "tags", [1]),
    ("any_tags", [1], "tags", [1]),
    ("event", ["x"], "event", ["x"]),
    ("user", 3, "user", 3),
]


def work_refusal(field: str, value: object) -> str:
    with pytest.raises(ValidationError) as refused:
        Work(**{"pipeline": "p", field: value})
    return str(refused.value)


@pytest.mark.parametrize(("name", "bad", "field", "in_work"), BAD, ids=[row[0] for row in BAD])
def test_a_bad_filter_value_gets_the_message_its_work_field_gives(name, bad, field, in_work):
    expected = work_refusal(field, in_work)
    assert expected.startswith(f"{field}: ")
    with pytest.raises(ValidationError) as refused:
        WorkFilter.of(**{name: bad})
    assert str(refused.value) == expected
    # and the service, sent the value by hand (not through WorkFilter.of), says the same
    wire = bad if isinstance(bad, list) or name == "user" else [bad]
    with pytest.raises(ValidationError) as refused_by_service:
        queries.parse(msgspec.json.encode({name: wire}), queries.Query)
    assert str(refused_by_service.value) == expected


@pytest.mark.parametrize(("name", "bad"), [("tags", [1]), ("event", ["x"]), ("user", 3)])
def test_the_withdraw_filter_refuses_what_the_search_refuses_in_the_same_words(name, bad):
    with pytest.raises(ValidationError) as by_search:
        WorkFilter.of(**{"any_tags" if name == "tags" else name: bad})
    with pytest.raises(ValidationError) as by_withdraw:
        WithdrawFilter.of(**{name: bad})
    assert str(by_withdraw.value) == str(by_search.value)


def test_the_filters_that_are_no_work_field_are_refused_by_name():
    with pytest.raises(ValidationError, match=r"^id_prefix: id_prefix is the start of a work id.*got '01J%'"):
        WorkFilter.of(id_prefix="01J%")
    with pytest.raises(ValidationError, match=r"^since: expected an ISO-8601 time"):
        WorkFilter.of(since="yesterday")
    with pytest.raises(ValidationError, match=r"^parent: expected a non-empty string"):
        WorkFilter.of(parent=7)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^pipelin: no filter 'pipelin'; filters are pipeline, status"):
        WorkFilter.of(pipelin="alpha")  # type: ignore[call-arg]


def test_one_value_or_several_is_one_filter_and_an_empty_one_is_none():
    assert WorkFilter.of(status="queued", priority=3) == WorkFilter.of(status=["queued"], priority=(3,))
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    assert WorkFilter.of(since="2026-01-01T00:00:00Z") == WorkFilter.of(since=moment) == WorkFilter.of(
        since=moment.timestamp())
    assert WorkFilter.of(since="2026-01-01T00:00:00") == WorkFilter.of(since=moment)  # naive means UTC
    empty = WorkFilter.of(pipeline=[], status=None, user="", tags=())
    assert empty == WorkFilter() and not empty and empty.given() == {}
    assert WorkFilter.of(include_deleted=True).given() == {"include_deleted": True}  # sent only when asked


def test_the_keywords_of_every_caller_are_the_fields():
    assert FilterValues.__optional_keys__ == FIELDS
    # a bulk action's keywords are the same but site and priority (a re-queue's own: where to)
    assert SelectionValues.__optional_keys__ == FIELDS - {"site", "priority"}
    # the CLI's filter options bear the filter's names, and convert in one place
    for group in (WorkFilters, Selection):
        assert {f.name for f in dataclasses.fields(group)} <= FIELDS, group


def test_the_cli_options_convert_into_the_core_filter():
    chosen = WorkFilters(pipeline=["a", "b"], tags=["x"], since="2026-01-01T00:00:00Z", parent="run-1")
    assert as_filter(chosen) == WorkFilter.of(pipeline=["a", "b"], tags="x", since="2026-01-01T00:00:00Z",
                                              parent="run-1")
    assert Selection(pipeline=["a"], status=["failure"]).filter() == WorkFilter.of(pipeline="a", status="failure")
    with pytest.raises(ValidationError, match=r"^status: status is one of"):
        as_filter(WorkFilters(status=["finished"]))


def test_the_service_reads_the_core_filter_and_only_adds_when_to_answer():
    assert issubclass(queries.Filters, WorkFilter) and issubclass(queries.Query, queries.Filters)
    consistency = {f.name: (f.type, f.default) for f in msgspec.structs.fields(queries.Consistency)}
    filters = {f.name: (f.type, f.default) for f in msgspec.structs.fields(queries.Filters)}
    core = {f.name: (f.type, f.default) for f in msgspec.structs.fields(WorkFilter)}
    assert filters == {**core, **consistency}  # the two fields written again there are Consistency's


def test_every_filter_field_has_a_sample_and_narrows_the_service_sql():
    assert set(SAMPLES) == FIELDS, "a new filter field: give it a sample here and its clause in queries.where"
    everything = queries.where(WorkFilter())
    for name, sample in SAMPLES.items():
        one = WorkFilter.of(**{name: sample})  # type: ignore[misc]
        decoded = queries.parse(msgspec.json.encode(one.given()), queries.Query)  # as the service reads it
        assert decoded.given() == one.given(), name
        assert queries.where(decoded) != everything, f"{name} is not read by queries.where"


def test_a_withdraw_asks_the_read_model_with_its_any_of_rule():
    asked = WithdrawFilter.of(tags=["a", "b"], event=7, user="ann", parent="p").queued(["calib"], "chime", 4)
    assert asked == WorkFilter.of(pipeline="calib", status="queued", site="chime", priority=4, any_tags=["a", "b"],
                                  event=7, user="ann", parent="p")
    clause, params = queries.where(asked)
    assert "list_has_any(tags" in clause and ["a", "b"] in params
