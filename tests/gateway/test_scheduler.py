"""engine.scheduler.Scheduler on the real SmolLM2: fairness, cancellation, bounds."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import ContextLengthError, QueueFullError
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler

GREEDY = SamplingParams(max_tokens=5, temperature=0)


def prompts(llm, n: int) -> list[list[int]]:
    return [llm.encode_prompt([{"role": "user", "content": f"Count to {i + 3}."}]) for i in range(n)]


async def collect(stream, order: list[int] | None = None) -> list[int]:
    ids = []
    async for chunk in stream:
        if order is not None and chunk.token_ids:
            order.append(stream.request_id)
        ids += chunk.token_ids
    return ids


def test_round_robin_and_same_tokens_as_alone(smollm2):
    async def main():
        sched = Scheduler(smollm2, max_running=4)
        try:
            ps = prompts(smollm2, 3)
            alone = [await collect(sched.submit(p, GREEDY)) for p in ps]
            order: list[int] = []
            streams = [sched.submit(p, GREEDY) for p in ps]
            together = await asyncio.gather(*(collect(s, order) for s in streams))
            return alone, together, order, [s.request_id for s in streams], sched.stats()
        finally:
            sched.close()

    alone, together, order, ids, stats = asyncio.run(main())
    assert together == alone
    # One token per live sequence per round: each round of 3 holds every request once.
    rounds = [order[i : i + 3] for i in range(0, len(order), 3)]
    assert all(sorted(r) == sorted(ids) for r in rounds if len(r) == 3), order
    assert stats.running == 0 and stats.finished == 6


def test_cancel_waiting_and_running_and_queue_bound(smollm2):
    async def main():
        sched = Scheduler(smollm2, max_running=1, max_waiting=1)
        try:
            p = prompts(smollm2, 1)[0]
            long = SamplingParams(max_tokens=300, temperature=0)
            running = sched.submit(p, long)
            first = await anext(running)
            waiting = sched.submit(p, long)
            with pytest.raises(QueueFullError):
                sched.submit(p, long)
            waiting.cancel()  # dropped from the queue without running
            running.cancel()
            while sched.stats().running:
                await asyncio.sleep(0.01)
            return first, sched.stats()
        finally:
            sched.close()

    first, stats = asyncio.run(main())
    assert first.token_ids
    assert stats.cancelled == 2 and stats.finished == 0 and stats.kv_cache_bytes == 0 and stats.waiting == 0


def test_prompt_errors_raise_at_submit(smollm2):
    async def main():
        sched = Scheduler(smollm2)
        try:
            with pytest.raises(ContextLengthError):
                sched.submit(list(range(10, 10 + smollm2.context_length)), GREEDY)
        finally:
            sched.close()

    asyncio.run(main())
