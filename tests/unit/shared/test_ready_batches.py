"""`Worker.ready_batches`: a model's outputs in the groups a worker writes, each output exactly once
and in order, and `last` only on a group after which nothing follows and the model ended cleanly
(so a worker may send its closing message, `done`, in that same write)."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.worker import Ready, Worker


async def _collect(
    outputs: AsyncIterator[int], write_s: float = 0.0, first_alone: bool = True
) -> list[Ready[int]]:
    got = []
    async for ready in Worker.ready_batches(outputs, first_alone=first_alone):
        got.append(ready)
        await asyncio.sleep(write_s)  # the caller's write
    return got


async def _fast(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def _slow(n: int, gap_s: float) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(gap_s)
        yield i


def _check(got: list[Ready[int]], n: int) -> None:
    assert [i for r in got for i in r.items] == list(range(n))
    assert all(r.items for r in got)
    assert not any(r.last for r in got[:-1])


async def test_a_fast_model_first_output_alone_then_the_rest_marked_last():
    got = await _collect(_fast(10), write_s=0.001)
    _check(got, 10)
    assert got[0].items == [0] and not got[0].last  # the first output never waits
    assert got[-1].last  # the stream had ended: the closing message can ride with it


async def test_a_reply_ready_at_once_goes_whole_in_one_write_when_the_first_need_not_go_alone():
    # an LLM's tokens: a reply the model had ready at once is one write, with its end
    got = await _collect(_fast(10), write_s=0.001, first_alone=False)
    assert got == [Ready(list(range(10)), last=True)]


@pytest.mark.parametrize("first_alone", [True, False])
async def test_a_slow_model_every_output_once_and_in_order(first_alone):
    got = await _collect(_slow(6, 0.005), first_alone=first_alone)
    _check(got, 6)
    assert got[0].items == [0]  # a model that streams: its first output leaves at once either way


async def test_a_model_that_fails_is_never_marked_ended():
    async def failing() -> AsyncIterator[int]:
        for i in range(4):
            yield i
        raise RuntimeError("model crashed")

    got: list[Ready[int]] = []
    with pytest.raises(RuntimeError, match="model crashed"):
        async for ready in Worker.ready_batches(failing()):
            got.append(ready)
            await asyncio.sleep(0.001)
    assert [i for r in got for i in r.items] == [0, 1, 2, 3]
    assert not any(r.last for r in got)  # its outputs are not a finished reply


async def test_closing_early_stops_the_model():
    stopped = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                await asyncio.sleep(0.001)
                yield i
                i += 1
        finally:
            stopped.set()

    batches = Worker.ready_batches(endless())
    first = await anext(batches)
    assert first.items == [0]
    await batches.aclose()  # a barge-in
    await asyncio.wait_for(stopped.wait(), 1)
