"""The followers' supervision: stopping waits for each part's own clean-up."""

from __future__ import annotations

import asyncio

import pytest

from workflow.log.lifetimes import until_stopped_or_failed


async def test_stopping_returns_only_after_every_part_has_cleaned_up() -> None:
    cleaned: list[str] = []

    async def part(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.05)  # clean-up that itself awaits (an unsubscribe)
            cleaned.append(name)

    stop = asyncio.Event()
    running = asyncio.create_task(until_stopped_or_failed(stop, part("read"), part("timers")))
    await asyncio.sleep(0.01)
    stop.set()
    await running
    assert sorted(cleaned) == ["read", "timers"]


async def test_a_part_that_fails_raises_after_the_others_cleaned_up() -> None:
    cleaned: list[str] = []

    async def fails() -> None:
        raise RuntimeError("boom")

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.05)
            cleaned.append("waits")

    with pytest.raises(RuntimeError, match="boom"):
        await until_stopped_or_failed(asyncio.Event(), fails(), waits())
    assert cleaned == ["waits"]


async def test_a_part_that_swallows_its_cancel_is_cancelled_again_and_the_stop_returns() -> None:
    """What Python 3.11's ``wait_for`` does when an answer and the cancel meet: the part's
    loop goes on to its next wait."""
    swallowed: list[int] = []

    async def swallows_once() -> None:
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(1)
                asyncio.current_task().uncancel()  # as if the answer had won

    stop = asyncio.Event()
    running = asyncio.create_task(until_stopped_or_failed(stop, swallows_once()))
    await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(running, 10)  # returns after one more cancel, not never
    assert swallowed == [1]


async def test_a_part_that_never_ends_is_left_behind_after_the_tries_and_the_stop_returns(monkeypatch) -> None:
    from workflow.log import lifetimes as restarts

    monkeypatch.setattr(restarts, "CANCEL_PATIENCE", 0.05)
    cancels: list[int] = []
    released = asyncio.Event()

    async def ignores_cancels() -> None:
        while not released.is_set():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancels.append(1)
                asyncio.current_task().uncancel()

    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(until_stopped_or_failed(stop, ignores_cancels()), 10)
    assert len(cancels) == restarts.CANCEL_TRIES  # cancelled that many times, then left behind
    [left] = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "ignores_cancels"]
    released.set()
    left.cancel()
    await asyncio.wait([left], timeout=5)
    assert left.done()


async def test_on_a_stop_parts_that_watch_it_end_by_themselves_within_the_grace_and_the_rest_are_cancelled() -> None:
    ended: list[tuple[str, bool]] = []  # (part, cancelled)
    stop = asyncio.Event()

    async def watches_stop() -> None:  # a service that finishes its batch when told to stop
        await stop.wait()
        await asyncio.sleep(0.01)
        ended.append(("watches", False))

    async def ignores_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.append(("ignores", True))
            raise

    tasks = [asyncio.create_task(watches_stop()), asyncio.create_task(ignores_stop())]
    running = asyncio.create_task(until_stopped_or_failed(stop, *tasks, grace=3.0))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(running, 60)  # the grace (3 s: the part that ignores the stop uses it all), then cancels
    assert ("watches", False) in ended  # ended by itself, not cancelled
    assert ("ignores", True) in ended  # cancelled once the grace was over
    assert all(task.done() for task in tasks)
