"""``workflow ls`` and ``count`` with a filter given more than once: any of its values
(as ``cancel -p a -p b``), never silently the last one only (issue 19 #11)."""

from __future__ import annotations

import json

from test_results_cli import cli

import workflow


async def test_ls_and_count_with_repeated_pipelines_statuses_and_sites_match_any_of_them(
    client, results_service, nats_url
):
    # Given works in four pipelines, one of them cancelled and one at another site
    ids = {name: (await client.deposit(workflow.Work(pipeline=name)))[0] for name in ("a", "b", "c", "d")}
    [elsewhere] = await client.deposit(workflow.Work(pipeline="a", site="kko"))
    await client.cancel(ids["b"])
    await client.results.count(fresh=True)
    # When ls names three pipelines, Then it lists the works of all three
    code, out, err = await cli("ls", "-p", "a", "-p", "b", "-p", "c", "--json", "--nats", nats_url)
    assert code == 0, err
    assert sorted(w["id"] for w in json.loads(out)) == sorted([ids["a"], ids["b"], ids["c"], elsewhere])
    assert await cli("count", "-p", "a", "-p", "b", "-p", "c", "--json", "--nats", nats_url) == (
        0, '{"count":4}\n', "")
    # and repeated statuses and sites are "any of" too
    code, out, err = await cli("ls", "-s", "cancelled", "-s", "queued", "-p", "b", "-p", "d", "--json",
                               "--nats", nats_url)
    assert code == 0 and sorted(w["id"] for w in json.loads(out)) == sorted([ids["b"], ids["d"]]), err
    assert await cli("count", "--site", "kko", "--site", "chime", "--json", "--nats", nats_url) == (
        0, '{"count":1}\n', "")
