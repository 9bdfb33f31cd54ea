"""The faster header reader: the same answers as nats-py's own, on any bytes, and really used."""

from __future__ import annotations

import nats.aio.client
from hypothesis import given, settings
from hypothesis import strategies as st

from workflow.log import connection
from workflow.log.connection import Connection, parse_headers

#: Pieces that exercise every rule: separators, whitespace nats-py strips or refuses in a
#: name, non-ASCII and invalid UTF-8, colons in values, empty names and values.
_PIECES = st.sampled_from([
    b"Nats-Msg-Id", b"Nats-Expected-Last-Subject-Sequence", b"X", b"", b":", b": ", b"\r\n", b"\r", b"\n",
    b" ", b"\t", b"\x0b", b"\x1c", b"\x1f", b"\xc3\xa9", b"\xff", b"value", b"wf.*.01J.>", b"12345", b"a:b",
])
_BLOCKS = st.one_of(st.binary(max_size=200), st.lists(_PIECES, max_size=30).map(b"".join))


@settings(max_examples=3000)
@given(_BLOCKS)
def test_parse_headers_agrees_with_nats_py_on_any_block(raw: bytes) -> None:
    assert parse_headers(raw) == nats.aio.client.Client._parse_header_lines(raw)


def test_a_repeated_name_keeps_its_last_value_and_bad_names_are_skipped() -> None:
    raw = b"A: 1\r\nA: 2\r\nB C: x\r\nb\xc3\xa9: y\r\nno colon\r\n: empty name\r\nD:  spaced  \r\n\r\n"
    assert parse_headers(raw) == {"A": "2", "": "empty name", "D": "spaced"}


def test_the_remembered_names_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(connection, "_NAMES", {})  # this test's own, so it leaves no full cache behind
    for i in range(connection._MAX_NAMES + 100):
        parse_headers(b"Name-%d: v\r\n" % i)
    assert len(connection._NAMES) == connection._MAX_NAMES
    assert parse_headers(b"Name-99999: still parsed\r\n") == {"Name-99999": "still parsed"}


def test_nats_py_still_reads_header_lines_through_the_method_we_replace() -> None:
    # If a nats-py upgrade stops calling _parse_header_lines, the override silently does
    # nothing: this fails instead, so the speed-up is re-done or dropped knowingly.
    import inspect

    source = inspect.getsource(nats.aio.client.Client._process_headers)
    assert "self._parse_header_lines(" in source
    assert Connection._parse_header_lines is parse_headers


async def test_messages_read_through_a_connection_carry_the_headers_published(nats_server) -> None:
    nc = await connection.connect(nats_server.url)
    try:
        assert isinstance(nc, Connection)
        sub = await nc.subscribe("h.test")
        await nc.publish("h.test", b"x", headers={"Nats-Msg-Id": "01J", "Nats-Expected-Last-Subject-Sequence": "7"})
        msg = await sub.next_msg(timeout=5)
        assert msg.headers == {"Nats-Msg-Id": "01J", "Nats-Expected-Last-Subject-Sequence": "7"}
    finally:
        await nc.close()
