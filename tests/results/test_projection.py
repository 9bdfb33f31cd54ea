"""The projector's fold, without NATS: rows agree with ``evolve``, restarts change nothing."""

from __future__ import annotations

import tempfile
import typing
from pathlib import Path

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from workflow.core import events as ev
from workflow.core.fold import FoldError, evolve, refusal
from workflow.core.notify import Notify, Slack
from workflow.core.work import Work
from workflow.results import database, projection
from workflow.results.columns import WORK_COLUMNS
from workflow.results.projection import row_to_work
from workflow.results.projector import Projector

names = st.text(alphabet="abcxyz", min_size=1, max_size=4)
values = st.one_of(st.integers(-5, 10**12), st.text(max_size=6), st.booleans(), st.none(), st.floats(allow_nan=False))
dicts = st.none() | st.dictionaries(st.text(max_size=5), values, max_size=3)
labels = st.none() | st.lists(names, max_size=3)

works = st.builds(
    Work,
    pipeline=st.sampled_from(["alpha", "beta-2"]),
    parameters=dicts,
    tags=labels,
    group=labels,
    event=st.none() | st.lists(st.integers(0, 10**12), max_size=3),
    priority=st.integers(1, 5),
    retries=st.integers(0, 5),
    site=st.sampled_from(["local", "chime", "kko"]),
    user=st.none() | st.sampled_from(["ann", "bob"]),
    config=dicts,
    precursors=st.none() | st.lists(st.text(max_size=4), max_size=2),
    command=st.none() | st.lists(names, min_size=1, max_size=3),
    notify=st.none() | st.builds(Notify, slack=st.builds(Slack, channel_id=names, message=st.none() | names,
                                                         results=st.booleans())),
    creation=st.floats(1.6e9, 1.8e9),
)
STEPS = ["started", "succeeded", "failed", "retry", "cancelled", "requeued", "deposited", "notified"]
STEP_TYPES = {"started": ev.Started, "succeeded": ev.Succeeded, "failed": ev.Failed, "retry": ev.Failed,
              "cancelled": ev.Cancelled, "requeued": ev.Requeued, "deposited": ev.Deposited,
              "notified": ev.Notified}
steps = st.lists(st.sampled_from(STEPS), max_size=8)


@st.composite
def histories(draw, work_id: str, valid: bool = True) -> list[ev.AnyEvent]:
    """One work's events: a deposit, then steps. ``valid``: only steps the work's state
    machine allows; otherwise any (a second deposit, an outcome with no attempt running,
    a start after the end...), and maybe no deposit at all."""
    work = draw(works)
    now = work.creation
    common = {"work_id": work_id, "pipeline": work.pipeline}
    deposited = msgspec.structs.replace(work, id=work_id, status="queued")
    waits = draw(st.none() | st.builds(ev.Waits, precursors=st.lists(names, max_size=2),
                                       not_before=st.none() | st.floats(1.6e9, 1.8e9)))
    events: list[ev.AnyEvent] = [ev.Deposited(**common, time=now, work=deposited, waits=waits)]
    status = "queued" if waits is None else "waiting"
    attempt = 0
    for step in draw(steps):
        refused = refusal(status, STEP_TYPES[step])
        if valid and refused:
            continue
        now += draw(st.floats(0.001, 100))
        outcome = {"attempt": attempt, "products": draw(labels), "plots": draw(labels)}
        if not refused and step != "notified":  # a Notified changes nothing of the work
            status = {"started": "running", "succeeded": "success", "failed": "failure",
                      "cancelled": "cancelled"}.get(step, "queued")
        if step == "deposited":
            events.append(ev.Deposited(**common, time=now, work=deposited, waits=waits))
        elif step == "started":
            attempt += 1
            events.append(ev.Started(**common, time=now, attempt=attempt, queue_seq=1, host="h"))
        elif step == "succeeded":
            events.append(ev.Succeeded(**common, time=now, results=draw(dicts), **outcome))
        elif step in ("failed", "retry"):
            events.append(ev.Failed(
                **common, time=now, reason=draw(st.sampled_from(["error", "lost", "timeout"])),
                will_retry=step == "retry",
                error=draw(st.none() | st.text(max_size=8)), traceback=draw(st.none() | st.text(max_size=8)),
                results=draw(dicts), **outcome,
            ))
        elif step == "cancelled":
            events.append(ev.Cancelled(**common, time=now, reason=draw(st.none() | names)))
        elif step == "notified":
            events.append(ev.Notified(**common, time=now, status=status, ok=draw(st.booleans()), attempts=1,
                                      reply={"slack:C1": {"ok": True}}))
        else:
            snapshot = msgspec.structs.replace(
                events[0].work, priority=draw(st.integers(1, 5)), attempt=attempt, status="queued"
            )
            events.append(ev.Requeued(**common, time=now, work=snapshot))
    if not valid and len(events) > 1 and draw(st.booleans()):
        del events[0]  # a work never deposited (or whose deposit aged out of the log)
    return events


@st.composite
def logs(draw, valid: bool = True) -> list[ev.AnyEvent]:
    """Several works' histories interleaved (each work's own order kept)."""
    count = draw(st.integers(1, 5))
    per_work = [draw(histories(f"01JWORK{i:019d}", valid)) for i in range(count)]
    order = draw(st.permutations([i for i, h in enumerate(per_work) for _ in h]))
    positions = [0] * count
    log = []
    for i in order:
        log.append(per_work[i][positions[i]])
        positions[i] += 1
    return log


def as_messages(log: list[ev.AnyEvent]) -> list[tuple[int, float, str, bytes]]:
    """The log as the projector receives it: (sequence, server time, subject, bytes)."""
    return [
        (seq, event.time, f"wf.{event.pipeline}.{event.work_id}.x", ev.encode(event))
        for seq, event in enumerate(log, 1)
    ]


def expected(log: list[ev.AnyEvent]) -> tuple[dict[str, Work], list[int]]:
    """Each work's state by ``evolve``, skipping the events it refuses; their sequences."""
    states: dict[str, Work] = {}
    refused = []
    for seq, event in enumerate(log, 1):
        try:
            states[event.work_id] = evolve(states.get(event.work_id), ev.decode(ev.encode(event)))
        except FoldError:
            refused.append(seq)
    return states, refused


def expected_works(log: list[ev.AnyEvent]) -> dict[str, Work]:
    return expected(log)[0]


def table(con, name: str, order: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM {name} ORDER BY {order}").fetchall()


def works_in(con) -> dict[str, Work]:
    columns = ", ".join(database.quote(c) for c in WORK_COLUMNS)
    rows = con.execute(f"SELECT {columns} FROM works").fetchall()
    works = [row_to_work(dict(zip(WORK_COLUMNS, row, strict=True))) for row in rows]
    return {work.id: work for work in works}


@settings(max_examples=150, deadline=None)
@given(logs())
def test_the_projected_works_table_holds_the_same_works_as_evolve(log):
    con = database.connect(":memory:")
    Projector(con).apply(as_messages(log))
    assert works_in(con) == expected_works(log)
    assert con.execute("SELECT count(*) FROM rejected").fetchall() == [(0,)]


@settings(max_examples=150, deadline=None)
@given(logs(valid=False))
def test_the_row_fold_refuses_exactly_the_events_evolve_refuses_and_folds_the_rest_alike(log):
    con = database.connect(":memory:")
    Projector(con).apply(as_messages(log))
    works, refused = expected(log)
    assert works_in(con) == works
    assert [seq for (seq,) in con.execute("SELECT seq FROM rejected ORDER BY seq").fetchall()] == refused
    folded = [seq for (seq,) in con.execute("SELECT seq FROM events ORDER BY seq").fetchall()]
    assert sorted(folded + refused) == list(range(1, len(log) + 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs(valid=False), st.data())
def test_projecting_with_restarts_at_random_points_gives_the_tables_of_one_replay(log, data):
    messages = as_messages(log)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(messages)), max_size=4)))
    restarts = set(data.draw(st.lists(st.integers(0, len(cuts)), max_size=3)))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "incremental.duckdb"
        con = database.connect(path)
        projector = Projector(con, cache_size=data.draw(st.integers(1, 4)))
        previous = 0
        for index, cut in enumerate([*cuts, len(messages)]):
            if index in restarts:  # a crash: memory lost, the database file kept
                con.close()
                con = database.connect(path)
                projector = Projector(con)
            start = data.draw(st.integers(0, previous))  # a consumer may redeliver what was applied
            projector.apply(messages[start:cut])
            previous = max(previous, cut)
        once = database.connect(":memory:")
        Projector(once).apply(messages)
        assert table(con, "works", "id") == table(once, "works", "id")
        assert table(con, "events", "seq") == table(once, "events", "seq")
        assert table(con, "rejected", "seq") == table(once, "rejected", "seq")
        assert con.execute("SELECT seq FROM checkpoint").fetchall() == [(len(messages),)]
        assert works_in(con) == expected_works(log)
        con.close()


def test_an_event_of_a_work_whose_deposit_is_not_in_the_log_is_rejected_not_folded():
    con = database.connect(":memory:")
    started = ev.Started(work_id="01JUNKNOWN", pipeline="alpha", time=1.0, attempt=1, queue_seq=1)
    projector = Projector(con)
    projector.apply([(7, 1.0, "wf.alpha.01JUNKNOWN.started", ev.encode(started))])
    assert con.execute("SELECT seq, reason FROM rejected").fetchall() == [
        (7, "state: Started for a work that was never deposited")
    ]
    assert con.execute("SELECT count(*) FROM events").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM works").fetchall() == [(0,)]
    assert projector.unfoldable == 1
    assert projector.store.checkpoint() == 7


def test_an_unreadable_message_is_rejected_and_the_checkpoint_moves_past_it():
    con = database.connect(":memory:")
    projector = Projector(con)
    projector.apply([(1, 1.0, "wf.alpha.x.junk", b"not json")])
    assert projector.store.checkpoint() == 1
    assert con.execute("SELECT count(*) FROM events").fetchall() == [(0,)]
    [(seq, subject, reason, head, size)] = con.execute(
        "SELECT seq, subject, reason, head, size FROM rejected"
    ).fetchall()
    assert (seq, subject, head, size) == (1, "wf.alpha.x.junk", b"not json", 8)
    assert reason.startswith("event: JSON is malformed")


def one_of_each_event(work_id: str = "01JW") -> list[ev.AnyEvent]:
    common = {"work_id": work_id, "pipeline": "alpha", "time": 1.0}
    work = Work(pipeline="alpha", id=work_id)
    return [  # in an order the state machine allows
        ev.Deposited(**common, work=work),
        ev.Started(**common, attempt=1, queue_seq=1),
        ev.Succeeded(**common, attempt=1, results={"x": 1}),
        ev.Requeued(**common, work=work),
        ev.Started(**common, attempt=1, queue_seq=1),
        ev.Failed(**common, attempt=1, reason="error", will_retry=True),
        ev.Cancelled(**common),
        ev.Notified(**common, status="cancelled", ok=True, attempts=1),
        ev.Deleted(**common),
    ]


STATUS_AFTER = {ev.Deposited: "queued", ev.Started: "running", ev.Succeeded: "success", ev.Failed: "queued",
                ev.Cancelled: "cancelled", ev.Requeued: "queued", ev.Deleted: "deleted", ev.Notified: "cancelled"}


def test_every_event_type_has_a_light_form_with_its_tag_that_the_row_fold_knows():
    examples = one_of_each_event()
    # a new event type in the core union: add an example here, and teach ``projection.apply``
    assert {type(event) for event in examples} == set(typing.get_args(ev.AnyEvent)) == set(projection.LIGHT)
    row = None
    for seq, event in enumerate(examples, 1):
        light = projection.decode(ev.encode(event))
        assert type(light) is projection.LIGHT[type(event)]
        assert light.__struct_config__.tag == type(event).__struct_config__.tag
        assert light.__struct_config__.gc is False
        row = projection.apply(row, light, seq)
        assert row is not None and row.status == STATUS_AFTER[type(event)]


def test_the_light_form_keeps_the_heavy_fields_as_raw_json():
    deposited, _, succeeded, _, _, failed, *_ = [projection.decode(ev.encode(e)) for e in one_of_each_event()]
    assert isinstance(deposited.work, msgspec.Raw)
    assert isinstance(succeeded.results, msgspec.Raw) and bytes(succeeded.results) == b'{"x":1}'
    assert bytes(succeeded.products) == b"null"
    assert failed.results is None  # decoded: merged with the failure's reason
    assert not hasattr(deposited, "id") and not hasattr(deposited, "by")


def test_the_row_fold_refuses_an_event_type_it_does_not_know():
    paused = msgspec.defstruct(
        "Paused", [("work_id", str), ("pipeline", str), ("time", float)], tag_field="type", tag="paused", kw_only=True
    )(work_id="01JW", pipeline="alpha", time=2.0)
    deposited = projection.decode(ev.encode(one_of_each_event()[0]))
    row = projection.apply(None, deposited, 1)
    for before in (None, row):
        with pytest.raises(TypeError, match="Paused"):
            projection.apply(before, paused, 2)


def test_the_read_model_keeps_within_its_memory_limit_and_draws_no_progress_bar(tmp_path, monkeypatch):
    from workflow.results import database

    monkeypatch.setenv("WORKFLOW_DUCKDB_MEMORY", "300MB")
    con = database.connect(tmp_path / "m.duckdb")
    [(limit, bar)] = con.execute(
        "SELECT current_setting('memory_limit'), current_setting('enable_progress_bar')"
    ).fetchall()
    assert (limit, bar) == ("286.1 MiB", False)  # 300 MB as DuckDB shows it
