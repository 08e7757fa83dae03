"""The SwiGLU feed-forward block: down(silu(gate x) * up x). Dense layers and shared experts."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.layers.linear import Linear


class GatedMLP:
    def __init__(self, gate_up: Linear, down: Linear):
        """gate_up: the gate and up rows stacked, [2 * inter, hidden]."""
        self.gate_up, self.down = gate_up, down

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
