"""Pipeline configuration files (core/configs.py): the format, its errors, and the expansion
of steps × matrix into works."""

from __future__ import annotations

import itertools
import string
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ulid import ULID

from workflow.core import configs
from workflow.core.waits import condition_of

CHAIN = textwrap.dedent("""\
    name: localise
    defaults:
      site: local
      retries: 0
    matrix:
      event: [12345, 67890]
    schedule:
      cron: "0 2 * * *"
      count: 3
    steps:
      - name: fetch
        stage: 1
        work:
          pipeline: fetch
          parameters: {event: "${{ matrix.event }}", label: "ev-${{ matrix.event }}"}
      - name: localise
        stage: 2
        matrix:
          beam: {range: [0, 3]}
        runs_on: chime
        work: {pipeline: localise, parameters: {beam: "${{ matrix.beam }}", event: "${{ matrix.event }}"}}
      - name: tell
        if: failure
        work: {pipeline: notify, priority: 5}
      - name: tidy
        if: always
        work: {pipeline: tidy}
""")


def test_a_chain_parses_into_steps_in_stage_order_with_their_matrices():
    config = configs.parse(CHAIN, "chain.yaml")
    assert config.name == "localise"
    assert config.schedule == configs.Schedule("0 0 2 * * *", 3)  # 5 fields, as users write them
    assert [(s.name, s.stage, s.condition) for s in config.steps] == [
        ("fetch", 1, "success"), ("localise", 2, "success"), ("tell", None, "failure"), ("tidy", None, "always")]
    assert config.step("localise").matrix == {"event": [12345, 67890], "beam": [0, 1, 2]}
    assert config.step("localise").work["site"] == "chime"  # runs_on
    assert config.step("tell").work["retries"] == 0  # defaults


def test_a_run_plans_each_combination_once_waiting_for_the_earlier_stages():
    config = configs.parse(CHAIN, "chain.yaml")
    run = str(ULID())
    plan = configs.plan(config, run, now=1.0)
    by_step = {name: plan.of_step(name) for name in ("fetch", "localise", "tell", "tidy")}
    assert [len(works) for works in by_step.values()] == [2, 6, 2, 2]
    fetch_ids = {p.work.id for p in by_step["fetch"]}
    localise_ids = {p.work.id for p in by_step["localise"]}
    first = by_step["fetch"][0].work
    assert first.parameters == {"event": 12345, "label": "ev-12345"}  # alone: the value's type; inside: text
    assert first.precursors is None
    assert first.config == {"parent": run, "step": "fetch", "configuration": "localise"}
    for planned in by_step["localise"]:
        assert set(planned.work.precursors) == fetch_ids
        assert planned.work.parameters == {"beam": planned.combination["beam"], "event": planned.combination["event"]}
    for planned in by_step["tell"] + by_step["tidy"]:  # no stage: after every staged step
        assert set(planned.work.precursors) == fetch_ids | localise_ids
    assert by_step["tell"][0].work.config["if"] == "failure"
    assert condition_of(by_step["tidy"][0].work) == "always"
    assert condition_of(first) == "success"
    # ids are derived: the same run plans the same ids; another run, others
    assert [p.work.id for p in configs.plan(config, run, now=2.0).works] == [p.work.id for p in plan.works]
    assert not {p.work.id for p in configs.plan(config, str(ULID()), 1.0).works} & {p.work.id for p in plan.works}
    positions = {p.work.id: i for i, p in enumerate(plan.works)}
    for i, planned in enumerate(plan.works):  # every precursor comes earlier (one deposit call)
        assert all(positions[pre] < i for pre in planned.work.precursors or [])


def test_a_file_with_many_problems_reports_each_with_its_line_and_column():
    text = textwrap.dedent("""\
        name: bad name
        steps:
          - name: fetch
            stgae: 1
            work:
              pipeline: fetch
              priority: 9
          - name: two
            if: sometimes
            work: {pipeline: p, parameters: {x: "${{ matrix.nope }}"}}
    """)
    with pytest.raises(configs.ConfigError) as caught:
        configs.parse(text, "bad.yaml")
    lines = str(caught.value).splitlines()
    assert lines == [
        "bad.yaml:1:7: name is 1-57 letters, digits and '-', got 'bad name'",
        "bad.yaml:4:5: a step has no key 'stgae'; expected one of name, stage, work, matrix, if, runs_on",
        "bad.yaml:7:17: step fetch: priority: priority is 1 (lowest) to 5 (highest), a whole number; got 9",
        "bad.yaml:9:9: if is success, failure, always or an expression such as "
        "${{ pipeline.fetch.status == 'success' }}, got 'sometimes'",
        "bad.yaml:10:37: step two: parameters: no matrix value 'nope' (this step's matrix has: none)",
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("", "1:1: the file is empty"),
    ("name: x\nsteps: [\n", "3:1: not valid YAML"),
    ("name: x\n", "1:1: a configuration needs steps"),
    ("name: x\nsteps:\n  - name: a\n    work: {pipeline: p, id: X}\n", "4:25: id is set by the run"),
    ("name: x\nsteps:\n  - name: a\n    work: {pipline: p}\n", "4:12: a work has no field 'pipline'"),
    ("name: x\nsteps:\n  - name: a\n    work: {}\n", "3:5: step a: its work needs a pipeline"),
    ("name: x\nsteps:\n  - {name: a, work: {pipeline: p}}\n  - {name: a, work: {pipeline: p}}\n",
     "4:12: step 'a' is named twice"),
    ("name: x\nsteps:\n  - {name: a, stage: 1, if: failure, work: {pipeline: p}}\n",
     "3:25: a first-stage step has no earlier step to fail"),
    ("name: x\nsteps:\n  - {name: a, matrix: {b: {range: [0, 5, 0]}}, work: {pipeline: p}}\n",
     "3:35: step a: matrix.b: range is N, [start, stop] or [start, stop, step]"),
    ("name: x\nsteps:\n  - {name: a, matrix: {b: [1, 1]}, work: {pipeline: p}}\n",
     "3:27: step a: matrix.b lists a value twice"),
    ("name: x\nschedule: {cron: '0 99 * * *'}\nsteps:\n  - {name: a, work: {pipeline: p}}\n",
     "2:18: schedule.cron: hours: expected 0-23"),
    ("name: x\ndeployments: [{image: chime/frb}]\nsteps:\n  - {name: a, work: {pipeline: p}}\n",
     "2:1: deployments (images, replicas) are not part of a configuration here"),
    ("name: x\nsteps:\n  - {name: a, work: {pipeline: p, parameters: {x: '${{ steps.f.results.y }}'}}}\n",
     "3:47: step a: ${{ steps.f.results… }} names no step"),
    ("name: x\nsteps:\n  - {name: a, work: {pipeline: p, parameters: {x: '${{ steps.b.results.y }}'}}}\n"
     "  - {name: b, stage: 2, work: {pipeline: p}}\n", "3:47: step a: reads the results of step b, which does not run"),
    ("name: x\nsteps:\n  - {name: a, work: {pipeline: p, parameters: {x: '${{ pipeline.a.status }}'}}}\n",
     "unknown reference ${{ pipeline.a.status }}"),
    ("name: x\nsteps:\n  - {name: a, if: \"${{ pipeline.f.status == 'success' }}\", work: {pipeline: p}}\n",
     "3:24: step a: if: pipeline.f.status names no step"),
    ("name: x\nsteps:\n  - {name: a, work: {pipeline: p}}\n  - {name: b, stage: 2, work: {pipeline: p},\n"
     "     if: \"${{ pipeline.a.status == 'succeeded' }}\"}\n", "5:36: step b: if: a step's status is one of"),
    ("name: x\nsteps:\n  - {name: a, work: {pipeline: p}}\n  - name: b\n    stage: 2\n"
     "    if: ${{ pipeline.a.status = 'success' }}\n    work: {pipeline: p}\n", "6:31: step b: if: unexpected '='"),
    ("name: x\nsteps:\n  - {name: a, work: {pipeline: p}}\n  - {name: b, stage: 2, work: {pipeline: p}}\n"
     "  - {name: c, stage: 2, if: \"pipeline.b.status == 'success'\", work: {pipeline: p}}\n",
     "5:30: step c: if judges step b, which does not run before it"),
    ("name: x\nsteps:\n  - {name: a, stage: 1, if: 'pipeline.a.status != \"failure\"', work: {pipeline: p}}\n",
     "3:25: a first-stage step has no earlier step for its if to judge"),
    ("name: x\nsteps:\n  - {name: a, stage: 2, if: 3, work: {pipeline: p}}\n",
     "3:29: if is success, failure, always or an expression"),
])
def test_each_kind_of_mistake_is_named_where_it_is(text, expected):
    with pytest.raises(configs.ConfigError) as caught:
        configs.parse(text, "f.yaml")
    assert expected in str(caught.value), str(caught.value)


def test_a_bad_value_made_by_substitution_is_refused_when_the_run_is_planned():
    text = "name: x\nsteps:\n  - {name: a, matrix: {p: [1, 9]}, work: {pipeline: q, priority: '${{ matrix.p }}'}}\n"
    config = configs.parse(text)  # the first combination is fine
    with pytest.raises(configs.ValidationError, match=r"step a \{'p': 9\}.*priority"):
        configs.plan(config, str(ULID()), 0.0)


values = st.one_of(st.integers(-1000, 1000), st.text(string.ascii_letters + string.digits + " _-", max_size=5),
                   st.booleans())
matrices = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True),
    st.lists(values, min_size=1, max_size=4, unique_by=lambda v: (type(v), v)),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(matrices, st.integers(0, 3))
def test_a_matrix_makes_the_product_of_its_value_counts_each_combination_once(matrix, ranged):
    matrix = {key: values for key, values in matrix.items() if len({repr(v) for v in values}) == len(values)}
    lines = ["name: m", "steps:", "  - name: s", "    matrix:"]
    for key, items in matrix.items():
        lines.append(f"      {key}: {configs.msgspec.json.encode(items).decode()}")
    if ranged:
        lines.append(f"      R: {{range: {ranged}}}")
    if not matrix and not ranged:
        lines[-1] = "    matrix: {}"
    references = {key: f"${{{{ matrix.{key} }}}}" for key in [*matrix, *(["R"] if ranged else [])]}
    lines.append(f"    work: {{pipeline: p, parameters: {configs.msgspec.json.encode(references).decode()}}}")
    config = configs.parse("\n".join(lines) + "\n")
    planned = configs.plan(config, str(ULID()), 0.0).works
    expected = 1
    for items in matrix.values():
        expected *= len(items)
    expected *= ranged or 1
    assert len(planned) == expected
    seen = [tuple(sorted((k, repr(v)) for k, v in p.work.parameters.items())) for p in planned]
    assert len(set(seen)) == len(seen)  # each combination once
    full = {**matrix, **({"R": list(range(ranged))} if ranged else {})}
    assert sorted(seen) == sorted(
        tuple(sorted((k, repr(v)) for k, v in zip(full, combo, strict=True)))
        for combo in itertools.product(*full.values())
    )
    assert len({p.work.id for p in planned}) == len(planned)


RESULTS = textwrap.dedent("""\
    name: r
    matrix: {event: [1, 2]}
    steps:
      - name: fetch
        work: {pipeline: p, parameters: {event: "${{ matrix.event }}"}}
      - name: beams
        stage: 2
        matrix: {beam: [0, 1]}
        work:
          pipeline: p
          parameters: {path: "${{ steps.fetch.results.path }}", label: "at ${{ steps.fetch.results.path }}"}
      - name: summary
        if: always
        work: {pipeline: p, parameters: {each: "${{ steps.beams.results.snr }}"}}
""")


def test_a_step_reads_the_results_of_its_own_combination_or_the_list_of_a_matrix_steps():
    plan = configs.plan(configs.parse(RESULTS), str(ULID()), 0.0)
    fetch, beams, summary = (plan.of_step(name) for name in ("fetch", "beams", "summary"))
    for planned in beams:  # the fetch of the same event: one work, one value
        [own] = [f.work.id for f in fetch if f.combination["event"] == planned.combination["event"]]
        assert planned.work.config["inputs"] == {"fetch": own}
        assert configs.inputs_of(planned.work) == [own]
    for planned in summary:  # the beams of the same event: a list
        assert planned.work.config["inputs"] == {
            "beams": [b.work.id for b in beams if b.combination["event"] == planned.combination["event"]]}
    results = {f.work.id: {"path": f"/data/{f.combination['event']}"} for f in fetch}
    resolved = configs.resolve_inputs(beams[3].work, results)
    assert resolved.parameters == {"path": "/data/2", "label": "at /data/2"}  # alone: the value; inside: text
    assert resolved.id == beams[3].work.id and resolved.config == beams[3].work.config
    results.update({b.work.id: {"snr": 10 * i} for i, b in enumerate(beams)})
    assert configs.resolve_inputs(summary[1].work, results).parameters == {"each": [20, 30]}
    del results[beams[2].work.id]
    with pytest.raises(configs.ValidationError, match=f"step beams gave no result 'snr' \\(work {beams[2].work.id}"):
        configs.resolve_inputs(summary[1].work, results)


BRANCH = textwrap.dedent("""\
    name: branch
    defaults: {pipeline: p}
    matrix: {event: [1, 2]}
    steps:
      - name: fetch
        work: {parameters: {event: "${{ matrix.event }}"}}
      - name: beams
        matrix: {beam: [0, 1]}
        work: {}
      - name: refetch
        stage: 2
        if: ${{ pipeline.fetch.status == 'failure' && !(pipeline.beams.status != "success") }}
        work: {}
      - name: tell
        if: ${{ always() }}
        work: {}
""")


def test_an_if_over_earlier_steps_waits_for_them_to_finish_and_names_the_works_of_its_own_combination():
    config = configs.parse(BRANCH)
    refetch, tell = config.step("refetch"), config.step("tell")
    assert refetch.condition == "always" and refetch.judges == ("fetch", "beams")
    assert refetch.rule == "${{ pipeline.fetch.status == 'failure' and not (pipeline.beams.status != 'success') }}"
    assert tell.condition == "always" and tell.expression is None  # ${{ always() }}: the rule itself
    plan = configs.plan(config, str(ULID()), 0.0)
    fetch, beams = plan.of_step("fetch"), plan.of_step("beams")
    for planned in plan.of_step("refetch"):
        event = planned.combination["event"]
        assert planned.work.config["if"] == refetch.expression and condition_of(planned.work) == "always"
        assert planned.work.config["if_steps"] == {
            "fetch": [f.work.id for f in fetch if f.combination["event"] == event],
            "beams": [b.work.id for b in beams if b.combination["event"] == event]}
        assert sorted(planned.work.precursors) == sorted(p.work.id for p in fetch + beams)  # the stage's rule


def test_a_retried_work_judges_the_works_that_replace_those_its_if_named():
    from workflow.core import runs

    plan = configs.plan(configs.parse(BRANCH), str(ULID()), 0.0)
    run_slots = runs.slots(plan, [])
    statuses = {slot.work.id: "success" for slot in run_slots}
    fetch = plan.of_step("fetch")
    statuses[fetch[1].work.id] = "failure"
    made = runs.retry_works(run_slots, statuses, 1, 0.0)
    for planned in plan.of_step("refetch"):
        again = made[planned.work.id]
        expected = made[fetch[1].work.id].id if planned.combination["event"] == 2 else fetch[0].work.id
        assert again.config["if_steps"]["fetch"] == [expected]


def test_a_retried_work_reads_the_results_of_the_works_that_replace_its_inputs():
    from workflow.core import runs

    plan = configs.plan(configs.parse(RESULTS), str(ULID()), 0.0)
    run_slots = runs.slots(plan, [])
    statuses = {slot.work.id: "success" for slot in run_slots}
    fetch = plan.of_step("fetch")
    statuses[fetch[0].work.id] = "failure"
    made = runs.retry_works(run_slots, statuses, 1, 0.0)
    # the failed fetch and everything after it (a stage waits for every work of the earlier ones)
    assert set(made) == {fetch[0].work.id} | {p.work.id for p in plan.of_step("beams") + plan.of_step("summary")}
    new_fetch = made[fetch[0].work.id].id
    for planned in plan.of_step("beams"):
        again = made[planned.work.id]
        expected = new_fetch if planned.combination["event"] == 1 else fetch[1].work.id
        assert again.config["inputs"] == {"fetch": expected} and again.config["replaces"] == planned.work.id
        assert sorted(again.precursors) == sorted([new_fetch, fetch[1].work.id])


def test_a_schedule_written_as_the_old_system_writes_it_is_read():
    text = "name: x\nschedule: {cronspec: '30 1 * * *', count: 2}\nsteps:\n  - {name: a, work: {pipeline: p}}\n"
    assert configs.parse(text).schedule == configs.Schedule("0 30 1 * * *", 2)


def test_a_schedule_may_name_its_time_zone_and_an_unknown_one_is_located():
    text = ("name: x\nschedule: {cron: '0 2 * * *', timezone: America/Vancouver}\n"
            "steps:\n  - {name: a, work: {pipeline: p}}\n")
    assert configs.parse(text).schedule == configs.Schedule("0 0 2 * * *", None, "America/Vancouver")
    assert configs.parse(text.replace(", timezone: America/Vancouver", "")).schedule.timezone is None  # UTC
    with pytest.raises(configs.ConfigError) as caught:
        configs.parse(text.replace("America/Vancouver", "America/Vancover"), "f.yaml")
    assert "2:41: schedule.timezone: unknown time zone 'America/Vancover'" in str(caught.value), str(caught.value)


def test_yes_no_on_and_off_are_text_only_true_and_false_are_booleans():
    """YAML 1.2's booleans, not 1.1's: a matrix key named ``on`` stays ``on`` (hypothesis
    found ``matrix={'on': [0]}`` read as ``{True: [0]}``)."""
    config = configs.parse("name: x\nsteps:\n  - name: s\n    matrix: {on: [1], a: [yes, off]}\n"
                   "    work: {pipeline: p, archive: false}\n")
    [step] = config.steps
    assert step.matrix == {"on": [1], "a": ["yes", "off"]}
    assert step.work["archive"] is False


def test_a_staged_step_skipped_by_its_if_leaves_the_run_a_success_but_what_it_skipped_does_not():
    from workflow.core import runs

    text = BRANCH.replace("  - name: tell\n    if: ${{ always() }}\n    work: {}\n", "")
    config = configs.parse(text + "  - {name: summary, stage: 3, work: {}}\n")
    plan = configs.plan(config, str(ULID()), 0.0)
    run_slots = runs.slots(plan, [])
    statuses = {slot.work.id: "cancelled" if slot.step == "refetch" else "success" for slot in run_slots}
    assert runs.view("r", config, run_slots, statuses, stopped=False).status == "success"
    statuses.update({slot.work.id: "cancelled" for slot in run_slots if slot.step == "summary"})
    assert runs.view("r", config, run_slots, statuses, stopped=False).status == "failure"


def test_an_if_with_no_works_of_the_judged_step_sharing_its_values_is_refused_when_planned():
    config = configs.parse("name: x\ndefaults: {pipeline: p}\nsteps:\n  - {name: a, matrix: {i: [0]}, work: {}}\n"
                           "  - {name: b, stage: 2, matrix: {i: [0, 1]}, if: \"pipeline.a.status == 'failure'\", "
                           "work: {}}\n")
    with pytest.raises(configs.ValidationError, match=r"step b \{'i': 1\}: its if judges step a, none of whose"):
        configs.plan(config, str(ULID()), 0.0)
