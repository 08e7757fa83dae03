"""How a model spreads tokens over its routed experts.

A trained MoE model sends a batch of tokens to nearly all of its experts, each getting
a share near the mean. A random-weight file can instead send every token to the same
few experts, which makes batched and prefill figures look far better than they will be
on the real model. `routing_stats` counts it, so a benchmark can print it beside tok/s.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from engine.layers.moe import MoE, Router


def random_prompt(n_tokens: int, vocab_size: int, seed: int = 0) -> list[int]:
    """`n_tokens` random token ids (the benchmarks' prompt), avoiding the first 100 ids,
    where vocabularies keep their special tokens."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, min(vocab_size, 30000), (n_tokens,), generator=g).tolist()


class LayerRouting(NamedTuple):
    layer: int
    used_experts: int  # experts chosen by at least one token
    n_experts: int
    max_over_mean: float  # the busiest expert's assignments / the mean per expert


class _CountingRouter:
    """Wraps a layer's router for one forward and counts the experts it chooses."""

    def __init__(self, router: Router, counts: torch.Tensor):
        self.router, self.counts = router, counts

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, weights = self.router(x)
        self.counts += torch.bincount(ids.reshape(-1).cpu(), minlength=self.counts.numel())
        return ids, weights


def routing_stats(llm, n_tokens: int = 512, seed: int = 0) -> list[LayerRouting]:
    """Prefill `n_tokens` random token ids in one batch and count, for every MoE layer, how
    many experts the router used and how loaded the busiest one was (max / mean
    assignments). Returns [] for a dense model."""
    model = llm.model
    moe_layers = [(i, layer.ffn) for i, layer in enumerate(model.layers) if isinstance(layer.ffn, MoE)]
    counts = {i: torch.zeros(moe.router.weight.shape[0], dtype=torch.int64) for i, moe in moe_layers}
    for i, moe in moe_layers:
        moe.router = _CountingRouter(moe.router, counts[i])
    try:
        ids = random_prompt(n_tokens, llm.config.vocab_size, seed)
        model.forward(torch.tensor(ids), model.new_cache(n_tokens + 1))
    finally:
        for _, moe in moe_layers:
            moe.router = moe.router.router
    stats = []
    for i, c in counts.items():
        mean = float(c.sum()) / c.numel()
        stats.append(LayerRouting(i, int((c > 0).sum()), c.numel(), float(c.max()) / mean if mean else 0.0))
    return stats


def routing_summary(stats: list[LayerRouting]) -> str:
    """Short figures for a table cell: the fewest experts any MoE layer used and the highest
    busiest-expert load over the mean, e.g. "experts >= 251/256, busiest <= 2.4x mean"."""
    if not stats:
        return "dense"
    used = min(s.used_experts for s in stats)
    worst = max(s.max_over_mean for s in stats)
    return f"experts >= {used}/{stats[0].n_experts}, busiest <= {worst:.1f}x mean"


def format_routing(stats: list[LayerRouting]) -> str:
    """One line per MoE layer: used experts and the busiest expert's load over the mean."""
    if not stats:
        return "routing: dense model"
    return "\n".join(
        f"layer {s.layer:>3}: {s.used_experts:>4}/{s.n_experts} experts used, "
        f"busiest {s.max_over_mean:.2f}x the mean load"
        for s in stats
    )
