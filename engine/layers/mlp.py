"""The SwiGLU feed-forward block: down(silu(gate x) * up x). Dense layers and shared experts."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.layers.linear import Linear


class GatedMLP:
    def __init__(self, gate_up: Linear, down: Linear):
        """gate_up: the gate and up rows stacked, [2 * inter, hidden]."""
        # gate_up is consumed by silu * up at once; down by the caller's residual add or sum
        self.gate_up, self.down = gate_up.reuse_row_output(), down.reuse_row_output()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
