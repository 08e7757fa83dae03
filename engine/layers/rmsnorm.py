"""RMSNorm: x / sqrt(mean(x^2) + eps) * weight, computed in float32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.weight = weight.float()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.device != x.device:
            self.weight = self.weight.to(x.device)
        return F.rms_norm(x.float(), self.weight.shape, self.weight, self.eps).to(x.dtype)
