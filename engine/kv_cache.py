"""Per-sequence KV cache: one growing buffer per layer and cached part.

A sequence's entries stay contiguous, so the native decode kernels attend over
them in place (gathering paged blocks into a contiguous copy each step would cost
about as much as the attention on a small CPU model: 0.9 ms per token at 300
tokens of SmolLM2 context, measured). The KV pool's budget is kept in blocks by
engine/block_manager.py, which sets each cache's `capacity` to the blocks it holds;
the buffers never grow beyond that capacity.

What a layer caches is its own business: GQA attention stores K and V
([tokens, kv_heads, head_dim] each); MLA stores only the compressed latent
([tokens, kv_lora_rank]) and the shared rope key ([tokens, rope_dim]).

Entries are stored in `dtype` and widened to the compute dtype when attention
reads them. `--kv-cache-dtype auto` (the default) picks f16 for a cache on a GPU,
as llama.cpp stores K and V: half the memory of f32 at no measured speed cost; and
f32 for a cache in RAM, where widening f16 at every decode step costs speed
(measured on a 16-layer tiny-llama, 16 cores, 2,048 tokens of context: decode
151 tok/s with f16, 231 with f32; on an H200 the same with either).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import ContextLengthError, InvalidOptionError

KV_CACHE_DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def resolve_cache_dtype(name: str, device: str) -> str:
    """The concrete dtype name of a `--kv-cache-dtype` choice for a cache on `device`."""
    if name == "auto":
        return "f16" if torch.device(device).type == "cuda" else "f32"
    if name not in KV_CACHE_DTYPES:
        raise InvalidOptionError(
            f"unknown KV cache dtype {name!r}; choose auto or one of {', '.join(KV_CACHE_DTYPES)}"
        )
    return name


def cache_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Bytes one token's entries take over all layers: K and V per KV head (GQA), or
    the latent and rope key (MLA)."""
    if config.mla is not None:
        per_layer = config.mla.kv_lora_rank + config.mla.qk_rope_head_dim
    else:
        per_layer = 2 * config.n_kv_heads * config.head_dim
    return config.n_layers * per_layer * torch.empty(0, dtype=dtype).element_size()


class KVCache:
    """Cached keys/values of one sequence, up to `capacity` tokens."""

    def __init__(self, n_layers: int, capacity: int, dtype: torch.dtype = torch.float32, device: str = "cpu"):
        self.capacity = capacity
        self.dtype = dtype
        self.device = device
        self.length = 0  # tokens whose entries are committed
        self._layers: list[list[torch.Tensor] | None] = [None] * n_layers

    def update(self, layer: int, *parts: torch.Tensor) -> list[torch.Tensor]:
        """Write the new tokens' parts (each [T, ...]) after the committed ones and
        return every part for all tokens so far ([length + T, ...] views)."""
        t = parts[0].shape[0]
        end = self.length + t
        bufs = self.reserve(layer, t, *(p.shape[1:] for p in parts))
        for b, p in zip(bufs, parts, strict=True):
            b[self.length : end] = p
        return [b[:end] for b in bufs]

    def reserve(self, layer: int, t: int, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
        """The layer's whole buffers (one per part, [size, *shape]), grown to hold t tokens
        after the committed ones: for kernels that write the new entries themselves."""
        end = self.length + t
        if end > self.capacity:
            raise ContextLengthError(
                f"the sequence needs {end} tokens but the context holds {self.capacity}; "
                "shorten the prompt or lower max_tokens."
            )
        bufs = self._layers[layer]
        if bufs is None or bufs[0].shape[0] < end:
            size = min(self.capacity, max(end, 256, 2 * (bufs[0].shape[0] if bufs else 0)))
            grown = [torch.empty((size, *shape), dtype=self.dtype, device=self.device) for shape in shapes]
            if bufs is not None:
                for g, b in zip(grown, bufs, strict=True):
                    g[: self.length] = b[: self.length]
            self._layers[layer] = bufs = grown
        return bufs

    def copy_prefix(self, src: KVCache, n: int) -> None:
        """Take the first n entries of every layer from src (a prefix-cache hit) into this empty cache."""
        for layer, bufs in enumerate(src._layers):
            if bufs is not None:
                dst = self.reserve(layer, n, *(b.shape[1:] for b in bufs))
                for d, b in zip(dst, bufs, strict=True):
                    d[:n] = b[:n]
        self.length = n

    def clone_prefix(self, n: int) -> KVCache:
        """A new cache holding copies of the first n entries, sized for exactly those."""
        out = KVCache(len(self._layers), n, self.dtype, self.device)
        out._layers = [None if bufs is None else [b[:n].clone() for b in bufs] for bufs in self._layers]
        out.length = n
        return out

    def advance(self, n: int) -> None:
        """Commit n tokens written by the layers in this forward pass."""
        self.length += n

    def free(self) -> None:
        """Drop the buffers (the sequence is finished or cancelled)."""
        self._layers = [None] * len(self._layers)

    @property
    def n_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for layer in self._layers if layer for b in layer)


@dataclass(frozen=True, slots=True)
class Segment:
    """The rows [start, end) of a step's tokens: one sequence's new tokens, at `positions`."""

    cache: KVCache
    start: int
    end: int
    positions: torch.Tensor  # [end - start] int64


class ForwardBatch:
    """Which rows of one forward belong to which sequence. Matmuls, norms and the MoE run on all
    rows at once; attention runs per segment over that sequence's own cache."""

    def __init__(self, parts: list[tuple[KVCache, int]], device: torch.device | str = "cpu"):
        """parts: (cache, new tokens) per sequence, in row order."""
        self.segments: list[Segment] = []
        row = 0
        for cache, n in parts:
            pos = torch.arange(cache.length, cache.length + n, device=device)
            self.segments.append(Segment(cache, row, row + n, pos))
            row += n
        self.rows = row
        # one tensor for one segment: layers that cache rope tables by identity then hit every layer
        self.positions = (
            self.segments[0].positions
            if len(self.segments) == 1
            else torch.cat([s.positions for s in self.segments])
        )

    def advance(self) -> None:
        """Commit every segment's new entries (after all layers wrote them)."""
        for s in self.segments:
            s.cache.advance(s.end - s.start)
