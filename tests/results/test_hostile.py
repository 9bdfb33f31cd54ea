"""Hostile input: whatever arrives on ``wf.>`` or on the results service's subjects is
refused with our error, recorded, and never stalls, crashes or gets folded."""

from __future__ import annotations

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from workflow.core import events as ev
from workflow.core.errors import ValidationError
from workflow.core.work import Work
from workflow.results import database, projection, queries
from workflow.results.export import ExportRequest
from workflow.results.projector import Projector

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
TYPES = ["deposited", "requeued", "started", "succeeded", "failed", "cancelled", "paused"]
#: Objects shaped like events, with some fields wrong: the decoder's hardest inputs.
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES), "work_id": st.text(max_size=4) | st.integers(), "pipeline": st.just("alpha"),
     "time": st.floats(allow_nan=False) | st.text(max_size=2)},
    optional={"v": st.integers(-2, 3) | st.integers(), "attempt": st.integers() | json_values,
              "queue_seq": st.integers(), "will_retry": json_values, "reason": st.sampled_from(["error", "x"]),
              "work": st.just(msgspec.to_builtins(Work(pipeline="alpha"))) | json_values,
              "results": json_values, "products": json_values},
).map(msgspec.json.encode)
raw_bytes = st.binary(max_size=64) | event_like | event_like.map(lambda b: b.replace(b"a", b"\xff", 1)) | \
    event_like.map(lambda b: b.replace(b'alpha"', b'\\ud800"', 1))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_bytes)
def test_the_event_decoders_raise_only_our_validation_error(data):
    for decode in (ev.decode, projection.decode):
        try:
            decode(data)
        except ValidationError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([queries.Query, queries.Filters, queries.ById, queries.Consistency, ExportRequest]),
       st.binary(max_size=40) | st.dictionaries(st.sampled_from(["limit", "wait", "id", "order", "fields", "status",
                                                                  "min_seq", "table", "offset", "directory", "x"]),
                                                 json_values, max_size=3).map(msgspec.json.encode))
def test_the_request_decoder_raises_only_our_validation_error(kind, data):
    try:
        queries.parse(data, kind)
    except ValidationError:
        pass


def an_event_of_the_deposited_work(data: bytes) -> bool:
    """True if ``data`` reads as an event of work 01JW: not hostile, the projector may fold
    it (the generators make one now and then, e.g. a well-formed cancel)."""
    try:
        return ev.decode(data).work_id == "01JW" and projection.decode(data).work_id == "01JW"
    except ValidationError:
        return False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_bytes.filter(lambda data: not an_event_of_the_deposited_work(data)), min_size=1, max_size=12))
def test_the_projector_records_every_hostile_message_as_rejected_and_never_stops(payloads):
    con = database.connect(":memory:")
    work = Work(pipeline="alpha", id="01JW")
    good = ev.encode(ev.Deposited(work_id="01JW", pipeline="alpha", time=1.0, work=work))
    messages = [(1, 1.0, "wf.alpha.01JW.queued.local.3", good)]
    messages += [(seq, 1.0, "wf.alpha.01JW.x", data) for seq, data in enumerate(payloads, 2)]
    Projector(con).apply(messages)
    # the deposit alone is folded; every hostile message after it is rejected, none lost
    assert con.execute("SELECT seq FROM events").fetchall() == [(1,)]
    rejected = con.execute("SELECT seq FROM rejected ORDER BY seq").fetchall()
    assert rejected == [(seq,) for seq in range(2, len(messages) + 1)]
    assert con.execute("SELECT status FROM works").fetchall() == [("queued",)]
    assert con.execute("SELECT seq FROM checkpoint").fetchall() == [(len(messages),)]


def cancelled(**fields) -> bytes:
    return msgspec.json.encode({"type": "cancelled", "work_id": "01JW", "pipeline": "alpha", "time": 2.0, **fields})


@pytest.mark.parametrize(
    ("subject", "data", "reason"),
    [
        ("wf.alpha.01JW.x", b"\xff\xfenot json", "event: not UTF-8"),
        ("wf.alpha.01JW.x", b"[1, 2", "event: Expected `object`, got `array`"),
        ("wf.alpha.01JW.x", cancelled(type="paused"), "event: Invalid value 'paused'"),
        ("wf.alpha.01JW.x", cancelled(time="noon"), "event: Expected `float`, got `str` - at `$.time`"),
        ("wf.alpha.01JW.x", cancelled(v=2), "v: schema version 2 is newer than this code knows (1)"),
        ("wf.alpha.01JOTHER.x", cancelled(), "subject: an event of work 01JW (alpha) published on another"),
        ("wf.alpha.01JX.x", cancelled(work_id="01JX"), "state: Cancelled for a work that was never deposited"),
        ("wf.alpha.01JW.x", msgspec.json.encode({"type": "started", "work_id": "01JW", "pipeline": "alpha",
                                                "time": 2.0, "attempt": 2**40, "queue_seq": 1}),
         "event: Expected `int` <= 2147483647"),
    ],
)
def test_each_kind_of_hostile_message_is_rejected_with_its_reason(subject, data, reason):
    con = database.connect(":memory:")
    good = ev.encode(ev.Deposited(work_id="01JW", pipeline="alpha", time=1.0, work=Work(pipeline="alpha")))
    Projector(con).apply([(1, 1.0, "wf.alpha.01JW.queued.local.3", good), (2, 5.0, subject, data)])
    [(seq, logged, got, head)] = con.execute("SELECT seq, logged, reason, head FROM rejected").fetchall()
    assert (seq, logged, head) == (2, 5.0, data[:256])
    assert got.startswith(reason)
    assert con.execute("SELECT status FROM works").fetchall() == [("queued",)]


def test_a_deposit_carrying_an_invalid_work_is_rejected_not_written():
    con = database.connect(":memory:")
    work = msgspec.to_builtins(Work(pipeline="alpha"))
    for seq, bad in enumerate([{**work, "priority": 9}, {**work, "pipeline": "beta"}, 5, {**work, "site": "a b"}], 1):
        data = msgspec.json.encode({"type": "deposited", "work_id": f"01J{seq}", "pipeline": "alpha", "time": 1.0,
                                    "work": bad})
        Projector(con).apply([(seq, 1.0, f"wf.alpha.01J{seq}.queued.local.3", data)])
    assert con.execute("SELECT count(*) FROM works").fetchall() == [(0,)]
    assert [r for (r,) in con.execute("SELECT reason FROM rejected ORDER BY seq").fetchall()] == [
        "work: Expected `int` <= 5 - at `$.priority`",
        "work: the work's pipeline 'beta' is not the event's 'alpha'",
        "work: Expected `object`, got `int`",
        "work: Expected `str` matching regex '^[A-Za-z0-9-]+$' - at `$.site`",
    ]


def test_an_event_of_a_newer_schema_version_is_refused_not_guessed_at():
    with pytest.raises(ValidationError, match="schema version 7 is newer"):
        ev.decode(cancelled(v=7, meaning="something this code cannot know"))
