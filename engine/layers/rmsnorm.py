"""RMSNorm: x / sqrt(mean(x^2) + eps) * weight, computed in float32."""

from __future__ import annotations

import torch

from engine.layers import fused


class RMSNorm:
    def __init__(self, weight: torch.Tensor, eps: float):
        """weight: [n] on the device where the norm runs (the placement put it there)."""
        self.weight = weight.float()
        self.ops = fused.ops_for(self.weight.device)
        if self.ops.native:
            fused.keep_array(self.weight)  # handed to the native norm every step
        self.shape = tuple(self.weight.shape)
        self.eps = eps
        self._row: fused.RowBuffer | None = None

    def reuse_row_output(self) -> RMSNorm:
        """Write single-row results into one buffer kept for this norm, overwritten by the
        next single-row call: for callers that consume the result at once (decode steps
        then allocate nothing here)."""
        self._row = fused.RowBuffer(self.shape[0])
        return self

    def apply_(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize the rows of x [T, n] in place; returns x."""
        return self.ops.rms_norm_(x, self.weight, self.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., n] → normalized, in x's dtype."""
        return self.ops.rms_norm(x, self.weight, self.eps, self._row)

    forward = __call__
