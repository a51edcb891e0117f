"""The hand-off from a worker's claim loop to its deliverers: order, counting,
and no item lost to a cancelled deliverer."""

from __future__ import annotations

import asyncio

import pytest

from outbox.deliver.handoff import Handoff


async def test_items_in_line_come_out_first_in_first_out_without_waiting() -> None:
    line: Handoff[int] = Handoff()
    for i in range(3):
        line.put_nowait(i)
    assert line.qsize() == 3
    assert [await line.get() for _ in range(3)] == [0, 1, 2]
    assert line.empty()


async def test_the_longest_waiting_deliverer_gets_the_next_item() -> None:
    line: Handoff[str] = Handoff()
    got: list[tuple[int, str]] = []

    async def deliverer(n: int) -> None:
        got.append((n, await line.get()))

    tasks = []
    for n in range(3):
        tasks.append(asyncio.create_task(deliverer(n)))
        await asyncio.sleep(0)  # each waits before the next starts
    for item in ("a", "b", "c"):
        line.put_nowait(item)
    await asyncio.gather(*tasks)
    assert got == [(0, "a"), (1, "b"), (2, "c")]


async def test_an_item_handed_to_a_deliverer_counts_until_that_deliverer_runs() -> None:
    # The claim loop sizes its next claim by what is queued: an item given to a
    # deliverer that has not woken yet must still count, or it claims too much.
    line: Handoff[int] = Handoff()
    waiting = asyncio.create_task(line.get())
    await asyncio.sleep(0)
    line.put_nowait(7)
    assert line.qsize() == 1
    assert not line.empty()
    assert await waiting == 7
    assert line.qsize() == 0
    assert line.empty()


async def test_a_deliverer_cancelled_after_being_handed_an_item_gives_it_back() -> None:
    line: Handoff[int] = Handoff()
    first = asyncio.create_task(line.get())
    await asyncio.sleep(0)
    line.put_nowait(1)  # handed to `first`, which has not run yet
    line.put_nowait(2)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert line.qsize() == 2
    assert [await line.get(), await line.get()] == [1, 2]  # back at the front


async def test_a_cancelled_waiter_is_passed_over() -> None:
    line: Handoff[int] = Handoff()
    gone = asyncio.create_task(line.get())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    line.put_nowait(5)
    assert line.qsize() == 1
    assert await line.get() == 5


async def test_taking_what_waits_leaves_what_was_handed_out() -> None:
    # At a stop the worker hands back what no deliverer took; an item already
    # handed to a deliverer is that deliverer's to send.
    line: Handoff[int] = Handoff()
    waiting = asyncio.create_task(line.get())
    await asyncio.sleep(0)
    for i in range(3):
        line.put_nowait(i)
    assert line.take_waiting() == [1, 2]
    assert await waiting == 0
    assert line.empty()
