"""Every field of the core's ``WorkFilter`` reaches the results service as the same filter,
whether a script gives it as a keyword of ``client.results.count`` or a user as an option
of ``workflow count`` (issue 20, item 5). A stand-in service on a real NATS server records
what arrives; the service's own decoder reads it."""

from __future__ import annotations

import asyncio

from test_results_cli import cli

from test_work_filter import SAMPLES
from workflow.cli.options import WorkFilters, option_name
from workflow.core.filters import WorkFilter
from workflow.core.work import RULES
from workflow.results import queries


async def stand_in_service(client) -> asyncio.Queue[bytes]:
    """Answers every count with 0, and keeps each request's body."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def answer(msg) -> None:
        received.put_nowait(msg.data)
        await msg.respond(b'{"count": 0}')

    await client.nc.subscribe(f"{queries.SUBJECT}.count", cb=answer)
    await client.nc.flush()
    return received


def as_served(body: bytes) -> WorkFilter:
    """The filter the service reads from a request (``when`` fields aside)."""
    request = queries.parse(body, queries.Filters)
    return WorkFilter.of(**{name: getattr(request, name) for name in WorkFilter.__struct_fields__})


async def test_every_filter_keyword_of_the_client_reaches_the_service(client):
    received = await stand_in_service(client)
    for name, sample in SAMPLES.items():
        assert await client.results.count(**{name: sample}) == 0
        body = await asyncio.wait_for(received.get(), 10)
        assert as_served(body) == WorkFilter.of(**{name: sample}) != WorkFilter(), name


async def test_the_cli_options_reach_the_service_as_the_same_filter(client, nats_url):
    received = await stand_in_service(client)
    offered = [name for name in WorkFilters.__dataclass_fields__]
    argv: list[str] = []
    for name in offered:
        flag = option_name(WorkFilters, name)
        argv += [flag] if SAMPLES[name] is True else [flag, str(SAMPLES[name])]
    code, out, err = await cli("count", *argv, "--no-fresh", "--nats", nats_url)
    assert (code, out.strip()) == (0, "0"), err
    body = await asyncio.wait_for(received.get(), 10)
    assert as_served(body) == WorkFilter.of(**{name: SAMPLES[name] for name in offered})


async def test_a_bad_filter_value_is_refused_with_its_work_field_message_by_client_and_cli(client, nats_url):
    received = await stand_in_service(client)
    code, _, err = await cli("count", "--status", "finished", "--nats", nats_url)
    assert code != 0 and f"status: {RULES['status']}; got 'finished'" in err, err
    code, _, err = await cli("ls", "--site", "no spaces", "--nats", nats_url)
    assert code != 0 and f"site: {RULES['site']}; got 'no spaces'" in err, err
    assert received.empty()  # refused before asking: nothing reached the service
