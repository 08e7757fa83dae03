"""RMSNorm: x / sqrt(mean(x^2) + eps) * weight, computed in float32."""

from __future__ import annotations

import torch

from engine.layers import fused


class RMSNorm:
    def __init__(self, weight: torch.Tensor, eps: float):
        self.weight = weight.float()
        if self.weight.is_cpu:
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

    def _follow(self, x: torch.Tensor) -> None:
        if self.weight.device != x.device:
            self.weight = self.weight.to(x.device)
            if self.weight.is_cpu:
                fused.keep_array(self.weight)

    def apply_(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize the rows of float32 x [T, n] in place; returns x."""
        self._follow(x)
        return fused.rms_norm_(x, self.weight, self.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # called twice per layer per token: one fused call on the CPU (engine/layers/fused.py)
        self._follow(x)
        if x.dtype == torch.float32 and x.dim() == 2:
            return fused.rms_norm(x, self.weight, self.eps, self._row)
        if x.dtype == torch.float32:
            return torch.rms_norm(x, self.shape, self.weight, self.eps)
        return torch.rms_norm(x.float(), self.shape, self.weight, self.eps).to(x.dtype)

    forward = __call__
