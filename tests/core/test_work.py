"""Work: the seed's fields and defaults, validated at construction and at assignment."""

from __future__ import annotations

import pytest

from workflow import Work
from workflow.core.errors import ValidationError
from workflow.core.work import RULES, check_site, validate_field

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
        ("site", "has.dot"),
        ("site", "x" * 65),
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
    assert check_site("mars") == "mars"
    assert validate_field("site", "venus") == "venus"
    monkeypatch.delenv("WORKFLOW_SITES")
    with pytest.raises(ValidationError, match=r"site: unknown site 'mars'; known sites: .*WORKFLOW_SITES"):
        check_site("mars")
    with pytest.raises(ValidationError, match="unknown site 'mars'"):
        validate_field("site", "mars")  # a worker's or a filter's --site, as at deposit


def test_every_real_site_is_accepted():
    for site in ("chime", "allenby", "kko", "gbo", "hco", "canfar", "cedar", "aro", "local"):
        assert check_site(Work(pipeline="p", site=site).site) == site


def test_a_site_this_host_does_not_know_is_no_error_of_the_work_itself(monkeypatch):
    """The site list is the depositing host's configuration: a work (or an event carrying
    one) made elsewhere with another site must still be built and read here (issue 19)."""
    monkeypatch.delenv("WORKFLOW_SITES", raising=False)
    work = Work(pipeline="p", site="nowhere")
    assert Work.from_payload(work.payload).site == "nowhere"
    work.site = "elsewhere"
    assert work.site == "elsewhere"
    with pytest.raises(ValidationError, match=RULES["site"]):
        Work(pipeline="p", site="has space")  # the format is the type's, checked everywhere


def test_from_payload_round_trips_and_refuses_unknown_values():
    work = Work(pipeline="p", parameters={"x": [1, 2]}, tags=["t"], priority=5)
    assert Work.from_payload(work.payload) == work
    with pytest.raises(ValidationError, match="priority"):
        Work.from_payload({**work.payload, "priority": 42})


# -- unknown fields (issue 18 §2) -------------------------------------------------------


def test_an_unknown_field_at_construction_is_refused_naming_it_and_the_known_fields():
    with pytest.raises(ValidationError) as caught:
        Work(pipeline="p", mentions={"slack": "#frb"})
    assert caught.value.field == "mentions"
    message = str(caught.value)
    assert message.startswith("mentions: a work has no field 'mentions'; its fields are pipeline, parameters,")
    for field in [*SEED_PAYLOAD_KEYS, "function", "command", "notify"]:
        assert field in message


def test_an_unknown_key_in_a_payload_is_refused_not_dropped():
    payload = {**Work(pipeline="p").payload, "mentions": {"slack": "#frb"}, "priorty": 5}
    with pytest.raises(ValidationError) as caught:
        Work.from_payload(payload)
    assert caught.value.field == "mentions"
    assert "no field 'mentions', 'priorty'; its fields are pipeline," in str(caught.value)


def test_a_payload_that_is_not_a_dict_is_refused_clearly():
    with pytest.raises(ValidationError, match="a work payload is a dict"):
        Work.from_payload(["pipeline", "p"])  # type: ignore[arg-type]


def test_a_work_without_a_pipeline_is_a_validation_error():
    with pytest.raises(ValidationError, match="pipeline: a work needs a pipeline"):
        Work(priority=3)  # type: ignore[call-arg]


# -- errors in the user's words (issue 18 §5) -------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("pipeline", "has space", "pipeline names are 1–128 letters, digits and '-'; got 'has space'"),
        ("pipeline", "", "pipeline names are 1–128 letters, digits and '-'; got ''"),
        ("pipeline", "x" * 129, "pipeline names are 1–128 letters, digits and '-'"),
        ("site", "a.b", "site names are 1–64 letters, digits and '-'; got 'a.b'"),
        ("priority", 9, "priority is 1 (lowest) to 5 (highest), a whole number; got 9"),
        ("priority", 0, "priority is 1 (lowest) to 5 (highest)"),
        ("priority", "high", "priority is 1 (lowest) to 5 (highest), a whole number; got 'high'"),
        ("timeout", 0, "timeout is 1 to 259200 seconds (3 days), a whole number; got 0"),
        ("timeout", 259_201, "timeout is 1 to 259200 seconds (3 days)"),
        ("retries", 6, "retries is 0 to 5 (how many times a failed attempt is tried again), a whole number; got 6"),
        ("retries", -1, "retries is 0 to 5"),
        ("attempt", -1, "attempt is a whole number, 0 or more; got -1"),
        ("status", "exploded", "status is one of created, waiting, queued, running, success, failure, cancelled"),
        ("tags", "t1", "tags is a list of text labels or None; got 't1'"),
        ("event", ["x"], "event is a list of telescope event numbers (whole numbers) or None"),
        ("archive", "yes", "archive is true or false; got 'yes'"),
        ("function", "nodots", "function is a dotted path like 'module.func', or None; got 'nodots'"),
        ("command", [], "command is a non-empty argv list of text"),
    ],
)
def test_a_bad_value_is_refused_in_the_users_words_everywhere(field, value, words):
    """Construction, assignment, a payload and a lone option value all say the field's
    rule, never msgspec's regex or bound wording."""
    base = {"pipeline": "p"}
    refusals = []
    for attempt in (
        lambda: Work(**{**base, field: value}),
        lambda: Work.from_payload({**base, field: value}),
        lambda: setattr(Work(pipeline="p"), field, value),
        lambda: validate_field(field, value),
    ):
        with pytest.raises(ValidationError) as caught:
            attempt()
        refusals.append(str(caught.value))
    for message in refusals:
        assert message.startswith(f"{field}: {words}")
        for jargon in ("Expected", "matching regex", "`str`", "`int`", "$."):
            assert jargon not in message


def test_every_field_has_a_rule_in_plain_words():
    assert set(RULES) == set(Work.__struct_fields__)


# -- retry_on (issue 18 §2) -------------------------------------------------------------


def test_retry_on_lists_failure_reasons_a_work_may_retry():
    assert Work(pipeline="p", config={"retry_on": ["error"]}).config == {"retry_on": ["error"]}
    assert Work(pipeline="p", config={"retry_on": []}).config == {"retry_on": []}
    assert Work.from_payload({"pipeline": "p", "config": {"retry_on": ["timeout", "reported"]}})


@pytest.mark.parametrize("retry_on", [["lost"], ["oops"], "error", [1], None])
def test_a_retry_on_that_is_not_a_list_of_known_reasons_is_refused_at_every_entry(retry_on):
    config = {"retry_on": retry_on, "parent": "x"}
    for attempt in (
        lambda: Work(pipeline="p", config=config),
        lambda: Work.from_payload({"pipeline": "p", "config": config}),
        lambda: setattr(Work(pipeline="p"), "config", config),
    ):
        with pytest.raises(ValidationError, match=r"config: config\['retry_on'\] is the list of failure reasons"):
            attempt()
