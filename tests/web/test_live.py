"""The live hub on a real nats-server: one subscription for every open page, the counts
asked once per burst of events for every dashboard together, listeners gone with their page."""

from __future__ import annotations

import asyncio

import nats

from workflow.web.live import LiveHub


async def test_one_subscription_feeds_every_page_and_counts_are_asked_once_per_burst(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    asked = 0

    async def counts() -> dict[str, int]:
        nonlocal asked
        asked += 1
        return {"asked": asked}

    hub = LiveHub(nc, counts)
    await hub.start()
    try:
        with hub.counts() as first, hub.counts() as second, \
                hub.events(lambda subject: ".01A." in subject) as one_work, hub.events(lambda _s: True) as feed:
            assert hub.listening == 4
            for number in range(20):  # a burst
                await nc.publish(f"wf.alpha.01A.started.{number}", b"{}")
            await nc.publish("wf.alpha.01B.started", b"{}")
            await nc.flush()
            assert await asyncio.wait_for(first.queue.get(), 10) == {"asked": 1}
            assert await asyncio.wait_for(second.queue.get(), 10) == {"asked": 1}
            await asyncio.sleep(1.0)  # would a second question come for the same burst? (none should)
            assert asked == 1 and first.queue.empty()
            assert one_work.queue.qsize() == 20 and feed.queue.qsize() == 21
        assert hub.listening == 0
        await nc.publish("wf.alpha.01A.cancelled", b"{}")
        await nc.flush()
        await asyncio.sleep(0.5)
        assert asked == 1  # no dashboard open: nothing asked
    finally:
        await hub.stop()
        await nc.close()
