"""Work: the seed's fields and defaults, validated at construction and at assignment."""

from __future__ import annotations

import pytest

from workflow import Work
from workflow.core.errors import ValidationError

SEED_PAYLOAD_KEYS = [
    "pipeline", "parameters", "results", "path", "event", "tags", "group", "timeout", "retries",
    "priority", "products", "plots", "site", "user", "archive", "precursors", "config", "id",
    "creation", "start", "stop", "attempt", "status",
]


def test_the_seed_example_gives_the_seed_payload():
    work = Work(pipeline="sample-pipeline", parameters={"a": 1, "b": 2})
    payload = work.payload
    assert sorted(payload) == sorted(SEED_PAYLOAD_KEYS)
    expected = {
        "pipeline": "sample-pipeline", "parameters": {"a": 1, "b": 2}, "results": None, "path": ".",
        "event": None, "tags": None, "group": None, "timeout": 3600, "retries": 2, "priority": 3,
        "products": None, "plots": None, "site": "local", "user": None, "archive": True,
        "precursors": None, "config": None, "id": None, "start": None, "stop": None,
        "attempt": 0, "status": "created",
    }
    assert {k: v for k, v in payload.items() if k != "creation"} == expected
    assert isinstance(payload["creation"], float)


def test_function_and_command_appear_in_the_payload_only_when_set():
    assert "function" not in Work(pipeline="p").payload
    assert Work(pipeline="p", function="mod.func").payload["function"] == "mod.func"
    assert Work(pipeline="p", command=["echo", "hi"]).payload["command"] == ["echo", "hi"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pipeline", ""),
        ("pipeline", "has space"),
        ("pipeline", "dots.are.subjects"),
        ("pipeline", "x" * 129),
        ("priority", 0),
        ("priority", 6),
        ("timeout", 0),
        ("timeout", 259_201),
        ("retries", -1),
        ("retries", 6),
        ("retries", True),
        ("site", "mars"),
        ("tags", "not-a-list"),
        ("event", ["not-an-int"]),
        ("status", "exploded"),
        ("attempt", -1),
        ("archive", "yes"),
        ("function", "not_dotted"),
        ("command", []),
    ],
)
def test_an_invalid_field_is_refused_at_construction_naming_the_field(field, value):
    with pytest.raises(ValidationError) as caught:
        Work(**{"pipeline": "p", field: value})
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}:")


def test_an_invalid_assignment_is_refused_and_leaves_the_work_unchanged():
    work = Work(pipeline="p")
    with pytest.raises(ValidationError, match="priority"):
        work.priority = 9
    assert work.priority == 3
    with pytest.raises(ValidationError, match="pipeline"):
        work.pipeline = "bad name"
    assert work.pipeline == "p"


def test_bounds_are_inclusive():
    work = Work(pipeline="a" * 128, priority=5, timeout=259_200, retries=5)
    work.priority = 1
    work.timeout = 1
    work.retries = 0
    assert (work.priority, work.timeout, work.retries) == (1, 1, 0)


def test_a_work_runs_a_function_or_a_command_not_both():
    with pytest.raises(ValidationError, match="not both"):
        Work(pipeline="p", function="m.f", command=["ls"])
    work = Work(pipeline="p", function="m.f")
    with pytest.raises(ValidationError, match="not both"):
        work.command = ["ls"]


def test_extra_sites_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORKFLOW_SITES", "mars, venus")
    assert Work(pipeline="p", site="mars").site == "mars"
    monkeypatch.delenv("WORKFLOW_SITES")
    with pytest.raises(ValidationError):
        Work(pipeline="p", site="mars")


def test_every_real_site_is_accepted():
    for site in ("chime", "allenby", "kko", "gbo", "hco", "canfar", "cedar", "aro", "local"):
        assert Work(pipeline="p", site=site).site == site


def test_from_payload_round_trips_and_refuses_unknown_values():
    work = Work(pipeline="p", parameters={"x": [1, 2]}, tags=["t"], priority=5)
    assert Work.from_payload(work.payload) == work
    with pytest.raises(ValidationError, match="priority"):
        Work.from_payload({**work.payload, "priority": 42})
