"""The SwiGLU feed-forward block: down(silu(gate x) * up x). Dense layers and shared experts."""

from __future__ import annotations

import torch

from engine.layers import fused
from engine.layers.linear import Linear


class GatedMLP:
    def __init__(self, gate_up: Linear, down: Linear):
        """gate_up: the gate and up rows stacked, [2 * inter, hidden]."""
        # gate_up is consumed by silu * up at once; down by the caller's residual add or sum
        self.gate_up, self.down = gate_up.reuse_row_output(), down.reuse_row_output()
        self._act_row = fused.RowBuffer(gate_up.out_features // 2)  # consumed by down at once
        self.silu_mul = fused.ops_for(gate_up.device).silu_mul

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.silu_mul(self.gate_up(x), self._act_row))
