"""engine/block_manager.py without a model: the pool's budget, prefix hits, LRU donors."""

from __future__ import annotations

import torch

from engine.block_manager import BlockManager
from engine.kv_cache import KVCache
from engine.sampling_params import SamplingParams
from engine.sequence import Sequence

BS = 4


def manager(blocks: int) -> BlockManager:
    return BlockManager(blocks, BS, lambda capacity: KVCache(1, capacity))


def seq(i: int, prompt: list[int], max_tokens: int = 8) -> Sequence:
    return Sequence(
        i,
        prompt,
        SamplingParams(max_tokens=max_tokens),
        vocab_size=1000,
        detokenizer=None,
        context_length=1000,
    )


def compute(bm: BlockManager, s: Sequence, n: int) -> None:
    """What a forward does to the cache: n entries whose value is their token id."""
    ids = torch.tensor(s.token_ids(s.num_computed, s.num_computed + n), dtype=torch.float32)
    s.cache.update(0, ids[:, None])
    s.cache.advance(n)
    bm.register(s)


def test_budget_prefix_hit_and_lru_eviction():
    bm = manager(8)
    a = seq(1, list(range(10, 19)))  # 9 tokens: 2 full blocks, and 3 blocks with the first output
    assert bm.allocate(a) and len(a.block_table) == 3 and a.cached_tokens == 0
    compute(bm, a, 9)
    bm.release(a)
    s = bm.stats()
    assert (s.used, s.cached, s.free) == (0, 2, 6)  # a's two full blocks stay as a donor

    b = seq(2, list(range(10, 18)) + [99, 98, 97])  # starts with a's two blocks
    assert bm.allocate(b) and b.cached_tokens == 8 and b.num_computed == 8
    assert b.cache.update(0, torch.zeros(0, 1))[0][:8, 0].tolist() == list(range(10, 18))
    s = bm.stats()
    assert (s.used, s.cached, s.free) == (3, 2, 3)

    c = seq(3, list(range(500, 519)))  # 20 tokens with its first output: 5 blocks, 3 free
    assert bm.allocate(c)  # the donor is evicted for it
    s = bm.stats()
    assert (s.used, s.cached, s.free, s.evicted_blocks) == (8, 0, 0, 2)
    d = seq(4, [1, 2, 3])
    assert not bm.allocate(d) and d.cache is None  # nothing left: it waits
    compute(bm, b, 3)
    bm.release(b)
    bm.release(c)
    assert bm.stats().used == 0 and bm.allocate(d)


def test_grow_doubles_where_the_pool_has_room_and_fails_when_full():
    bm = manager(6)
    a = seq(1, [1, 2, 3], max_tokens=100)
    assert bm.allocate(a) and len(a.block_table) == 1
    compute(bm, a, 3)
    assert bm.grow(a, 5) and len(a.block_table) == 2 and a.cache.capacity == 8
    assert bm.grow(a, 9) and len(a.block_table) == 4  # doubled
    b = seq(2, [7, 8, 9])
    assert bm.allocate(b)
    assert bm.grow(a, 17) and len(a.block_table) == 5  # one block left: exactly what it needs
    assert not bm.grow(a, 21) and len(a.block_table) == 5


def test_a_newer_copy_of_the_same_blocks_replaces_the_older_donor():
    bm = manager(16)
    prompt = list(range(40, 49))
    a = seq(1, prompt)
    bm.allocate(a)
    compute(bm, a, 9)
    bm.release(a)
    b = seq(2, prompt + [1, 2, 3, 4])
    bm.allocate(b)
    assert b.cached_tokens == 8
    compute(bm, b, b.num_tokens - b.num_computed)
    bm.release(b)
    s = bm.stats()
    assert s.cached == 3 and s.used == 0  # b's three full blocks; a's two are gone with it
