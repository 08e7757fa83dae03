"""RMSNorm: x / sqrt(mean(x^2) + eps) * weight, computed in float32."""

from __future__ import annotations

import torch


class RMSNorm:
    def __init__(self, weight: torch.Tensor, eps: float):
        self.weight = weight.float()
        self.shape = tuple(self.weight.shape)
        self.eps = eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # called twice per layer per token: plain torch.rms_norm, no conversions when x is f32
        if self.weight.device != x.device:
            self.weight = self.weight.to(x.device)
        if x.dtype == torch.float32 and x.dim() == 2 and x.shape[0] == 1:
            # the decode row: torch.rms_norm's CPU path is a dozen small ops with dtype
            # round trips; these four compute the same float32 values (same order)
            return (x * x.square().mean(-1, keepdim=True).add_(self.eps).rsqrt_()).mul_(self.weight)
        if x.dtype == torch.float32:
            return torch.rms_norm(x, self.shape, self.weight, self.eps)
        return torch.rms_norm(x.float(), self.shape, self.weight, self.eps).to(x.dtype)

    forward = __call__
