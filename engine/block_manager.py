"""The KV cache pool: a budget of fixed-size blocks shared by all requests, and the prefix cache.

`--ctx-size` tokens of KV cache in all (as llama-server counts it) make `num_blocks` blocks of
`block_size` tokens. A running sequence holds the blocks its cache may fill (its `block_table`);
its KVCache never grows beyond them, so memory follows the budget. Entries stay contiguous per
sequence (engine/kv_cache.py says why), so a block id names a share of the budget, not a place.

Prefix cache: each full block of a sequence's computed tokens is known by a hash of its tokens
and of every token before it. A new request whose prompt starts with known blocks copies their
entries instead of computing them (a shared system prompt, the earlier turns of a chat). When a
sequence ends, its hashed blocks stay in the pool as a donor (a copy of just those entries) until
the pool needs room: donors are evicted least recently used first.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass

from engine.kv_cache import KVCache
from engine.sequence import Sequence

log = logging.getLogger("moebox.kv")


@dataclass(eq=False)
class _Donor:
    """The hashed blocks of a sequence that ended: their entries and the pool blocks they hold."""

    cache: KVCache
    block_ids: list[int]
    hashes: list[int]  # chain hashes of its blocks, in order
    refs: int = 0  # prefix-cache entries that point here


@dataclass(eq=False)
class _Entry:
    tokens: tuple[int, ...]  # the block's own tokens (checked on a hit: hashes can collide)
    holder: Sequence | _Donor  # whose cache holds the entries (a live sequence or a donor)


@dataclass
class BlockStats:
    total: int
    used: int  # held by running sequences
    cached: int  # held by the prefix cache (donors), given back when the pool needs them
    free: int
    prompt_tokens: int = 0  # prompt tokens of admitted requests
    cached_tokens: int = 0  # of those, taken from the prefix cache
    evicted_blocks: int = 0


@dataclass
class _Counters:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    evicted_blocks: int = 0


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, new_cache: Callable[[int], KVCache]):
        """new_cache(capacity) makes an empty KVCache for a sequence."""
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._new_cache = new_cache
        self._free: collections.deque[int] = collections.deque(range(num_blocks))
        self._index: dict[int, _Entry] = {}  # chain hash of a full block → where its entries are
        self._donors: collections.OrderedDict[int, _Donor] = collections.OrderedDict()  # LRU first
        self._hashes: dict[int, list[int]] = {}  # sequence id → chain hashes of its hashed blocks
        self._counters = _Counters()

    # --- budget ------------------------------------------------------------------------------------

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def stats(self) -> BlockStats:
        cached = sum(len(d.block_ids) for d in self._donors.values())
        c = self._counters
        return BlockStats(
            total=self.num_blocks,
            used=self.num_blocks - len(self._free) - cached,
            cached=cached,
            free=len(self._free),
            prompt_tokens=c.prompt_tokens,
            cached_tokens=c.cached_tokens,
            evicted_blocks=c.evicted_blocks,
        )

    def _available(self) -> int:
        return len(self._free) + sum(len(d.block_ids) for d in self._donors.values())

    def _take(self, n: int) -> list[int] | None:
        """n free blocks, evicting donors (least recently used first) as needed; None if the pool
        cannot give n even then (nothing is evicted in that case)."""
        if n > self._available():
            return None
        while len(self._free) < n:
            self._evict(next(iter(self._donors)))
        return [self._free.popleft() for _ in range(n)]

    def _evict(self, key: int) -> None:
        donor = self._donors.pop(key)
        for h in donor.hashes:
            entry = self._index.get(h)
            if entry is not None and entry.holder is donor:
                del self._index[h]
        self._free.extend(donor.block_ids)
        self._counters.evicted_blocks += len(donor.block_ids)

    # --- a sequence's blocks -----------------------------------------------------------------------

    def allocate(self, seq: Sequence) -> bool:
        """Give a waiting sequence blocks for its prompt and first generated token, and its cache,
        filled from the prefix cache where its prompt starts with known blocks. False (and nothing
        changes) when the pool cannot hold it now."""
        holder, hit_blocks = self._match(seq)
        if isinstance(holder, _Donor):
            self._donors.move_to_end(id(holder))  # the last one evicted to make room below
        n = self.blocks_for(len(seq.prompt_ids) + 1)
        blocks = self._take(n)
        if blocks is None:
            return False
        seq.block_table = blocks
        seq.cache = self._new_cache(n * self.block_size)
        hit = hit_blocks * self.block_size
        if hit:
            seq.cache.copy_prefix(holder.cache, hit)
        seq.cached_tokens = hit
        self._hashes[seq.id] = self._chain(seq, hit_blocks)
        seq.hashed_blocks = hit_blocks
        self._counters.prompt_tokens += len(seq.prompt_ids)
        self._counters.cached_tokens += hit
        return True

    def grow(self, seq: Sequence, tokens: int) -> bool:
        """Make the sequence's cache hold `tokens` entries. Where the pool has room, its blocks double
        (up to what the request can still use) so its buffers are not regrown every block; when the
        pool is short, it gets exactly what it needs. False when even that is not there."""
        held = len(seq.block_table)
        need = self.blocks_for(tokens)
        if need <= held:
            return True
        most = self.blocks_for(min(seq.context_length, len(seq.prompt_ids) + seq.params.max_tokens))
        want = max(need, min(2 * held, most))  # most < need: a context cut short by the caller
        got = [self._free.popleft() for _ in range(want - held)] if len(self._free) >= want - held else None
        if got is None:
            got = self._take(need - held)
            if got is None:
                return False
        seq.block_table += got
        seq.cache.capacity = len(seq.block_table) * self.block_size
        return True

    def register(self, seq: Sequence) -> None:
        """Make the sequence's newly computed full blocks known to the prefix cache."""
        hashes = self._hashes.get(seq.id)
        if hashes is None:
            return
        full = seq.num_computed // self.block_size
        bs = self.block_size
        for i in range(seq.hashed_blocks, full):
            tokens = tuple(seq.token_ids(i * bs, (i + 1) * bs))
            h = hash((hashes[-1] if hashes else None, tokens))
            hashes.append(h)
            if h not in self._index:
                self._index[h] = _Entry(tokens, seq)
        seq.hashed_blocks = full

    def release(self, seq: Sequence) -> None:
        """Free a finished sequence's blocks; its hashed blocks stay as a donor for later prompts."""
        hashes = self._hashes.pop(seq.id, [])
        blocks, seq.block_table = seq.block_table, []
        cache, seq.cache = seq.cache, None
        n = min(len(hashes), seq.hashed_blocks, len(blocks))
        donor = None
        if n and cache is not None:
            donor = _Donor(cache.clone_prefix(n * self.block_size), blocks[:n], hashes[:n])
            blocks = blocks[n:]
            bs = self.block_size
            for i, h in enumerate(hashes[:n]):  # the newest copy of a block serves from now on
                entry = self._index.get(h)
                if entry is None:  # its earlier holder was evicted meanwhile
                    entry = self._index[h] = _Entry(tuple(seq.token_ids(i * bs, (i + 1) * bs)), donor)
                    donor.refs += 1
                    continue
                old = entry.holder
                entry.holder = donor
                donor.refs += 1
                if isinstance(old, _Donor):
                    old.refs -= 1
                    if old.refs == 0 and id(old) in self._donors:
                        self._evict(id(old))
        # entries still pointing at this sequence (its blocks past n) go with it
        for h in hashes[n:]:
            entry = self._index.get(h)
            if entry is not None and entry.holder is seq:
                del self._index[h]
        self._free.extend(blocks)
        if donor is not None:
            if donor.refs:
                self._donors[id(donor)] = donor
            else:
                self._free.extend(donor.block_ids)
        if cache is not None:
            cache.free()

    # --- prefix matching -----------------------------------------------------------------------------

    def _match(self, seq: Sequence) -> tuple[Sequence | _Donor | None, int]:
        """(holder, n): the first n blocks of the prompt are in holder's cache. At least the last
        prompt token is left to compute: its logits choose the first generated token."""
        bs = self.block_size
        h = None
        holder, n = None, 0
        for i in range((len(seq.prompt_ids) - 1) // bs):
            tokens = tuple(seq.prompt_ids[i * bs : (i + 1) * bs])
            h = hash((h, tokens))
            entry = self._index.get(h)
            if entry is None or entry.tokens != tokens:
                break
            holder, n = entry.holder, i + 1
        return holder, n

    def _chain(self, seq: Sequence, n: int) -> list[int]:
        bs, h, out = self.block_size, None, []
        for i in range(n):
            h = hash((h, tuple(seq.prompt_ids[i * bs : (i + 1) * bs])))
            out.append(h)
        return out


__all__ = ["BlockManager", "BlockStats"]
