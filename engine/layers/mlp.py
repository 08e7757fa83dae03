"""The SwiGLU feed-forward block: down(silu(gate x) * up x). Dense layers and shared experts."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.layers.linear import Linear


class GatedMLP:
    def __init__(self, gate: Linear, up: Linear, down: Linear):
        self.gate, self.up, self.down = gate, up, down

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))
