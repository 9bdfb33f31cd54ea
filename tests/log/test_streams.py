"""Applying streams/: idempotent, and never silently changing an existing log."""

from __future__ import annotations

import json

import nats
import pytest

from workflow.core.errors import StreamConfigMismatchError
from workflow.log.streams import apply_streams, load_stream_configs


def test_the_shipped_stream_is_an_immutable_log_with_direct_get_and_dedup():
    [config] = load_stream_configs()
    assert config["name"] == "WORKFLOW" and config["subjects"] == ["wf.>"]
    assert config["deny_delete"] and config["deny_purge"] and config["allow_direct"]
    assert config["retention"] == "limits" and config["storage"] == "file"
    assert config["duplicate_window"] > 0


async def test_apply_creates_once_then_is_a_no_op(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        [first] = await apply_streams(nc)
        [second] = await apply_streams(nc)
        assert first.created and not second.created and not second.updated
    finally:
        await nc.close()


async def test_a_differing_stream_is_reported_not_changed_unless_asked(nats_server, tmp_path):
    nc = await nats.connect(nats_server.url)
    try:
        await apply_streams(nc)
        [config] = load_stream_configs()
        config["max_age"] = 3600 * 10**9
        (tmp_path / "WORKFLOW.json").write_text(json.dumps(config))
        with pytest.raises(StreamConfigMismatchError, match="max_age"):
            await apply_streams(nc, tmp_path)
        info = json.loads((await nc.request("$JS.API.STREAM.INFO.WORKFLOW", b"")).data)
        assert info["config"]["max_age"] == 0
        [applied] = await apply_streams(nc, tmp_path, update=True)
        assert applied.updated
        info = json.loads((await nc.request("$JS.API.STREAM.INFO.WORKFLOW", b"")).data)
        assert info["config"]["max_age"] == 3600 * 10**9
    finally:
        await nc.close()


async def test_the_log_refuses_deletes_and_purges(nats_url):
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.publish("wf.p.X.cancelled", b"{}")
        with pytest.raises(nats.js.errors.APIError):
            await js.delete_msg("WORKFLOW", 1)
        with pytest.raises(nats.js.errors.APIError):
            await js.purge_stream("WORKFLOW")
    finally:
        await nc.close()
