"""Rotary position embedding, plain or YaRN-scaled as DeepSeek uses it.

Two pairings of the rotated dimensions exist in GGUF files: "interleaved"
(x[2i], x[2i+1]), which llama.cpp calls NORM and uses for llama (its converter
permutes q/k rows into it) and deepseek2, and "neox" (x[i], x[i + d/2]) for
qwen2/qwen2moe/qwen3moe.
"""

from __future__ import annotations

import math

import torch


def _yarn_correction_dim(n_rot: float, dim: int, base: float, original_ctx: int) -> float:
    return dim * math.log(original_ctx / (n_rot * 2 * math.pi)) / (2 * math.log(base))


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """DeepSeek's yarn_get_mscale."""
    return 1.0 if factor <= 1.0 else 0.1 * mscale * math.log(factor) + 1.0


class RotaryEmbedding:
    """cos/sin table built on demand; `apply(x, positions)` rotates x [T, heads, dim].

    For YaRN (DeepSeek-V2/V3): frequencies blend interpolation and extrapolation
    between the beta_fast/beta_slow correction dims, and the attention softmax
    scale grows by mscale(factor, mscale_all_dim)^2 (`attention_scale`). GGUF files
    carry mscale_all_dim only (as yarn_log_multiplier = 0.1 * mscale_all_dim),
    which llama.cpp reads as mscale == mscale_all_dim, so cos/sin are then unscaled.

    freq_factors (Llama 3.1+ GGUFs: the `rope_freqs.weight` tensor, [dim/2]) divide
    each pair's frequency before any scaling, as ggml_rope_ext applies them.
    """

    def __init__(
        self,
        dim: int,
        base: float,
        *,
        interleaved: bool,
        scaling_type: str = "none",
        factor: float = 1.0,
        original_context_length: int = 0,
        beta_fast: float = 32.0,
        beta_slow: float = 1.0,
        mscale_all_dim: float = 0.0,
        freq_factors: torch.Tensor | None = None,
    ):
        self.dim = dim
        self.interleaved = interleaved
        pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        inv_freq = 1.0 / pos_freqs
        if freq_factors is not None:
            inv_freq = inv_freq / freq_factors.to(torch.float64).cpu()
        self.cos_sin_scale = 1.0
        self.attention_scale = 1.0
        if scaling_type == "linear" and factor > 1.0:
            inv_freq = inv_freq / factor
        elif scaling_type == "yarn" and factor > 1.0:
            low = max(math.floor(_yarn_correction_dim(beta_fast, dim, base, original_context_length)), 0)
            high = min(
                math.ceil(_yarn_correction_dim(beta_slow, dim, base, original_context_length)), dim - 1
            )
            if low == high:
                high += 0.001
            ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
            extrapolation = 1.0 - ramp
            inv_freq = (inv_freq / factor) * (1 - extrapolation) + inv_freq * extrapolation
            if mscale_all_dim:
                self.attention_scale = yarn_mscale(factor, mscale_all_dim) ** 2
            else:
                self.cos_sin_scale = yarn_mscale(factor)
        self.inv_freq = inv_freq.float()
        self._cos = torch.empty(0, dim // 2)
        self._sin = torch.empty(0, dim // 2)
        self._positions: torch.Tensor | None = None
        self._rotation = None
        self._tables_key: torch.Tensor | None = None
        self._tables = None

    def _table(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos.shape[0] < n:
            size = max(n, 2 * self._cos.shape[0], 256)
            freqs = torch.outer(torch.arange(size, dtype=torch.float32), self.inv_freq)  # [size, dim/2]
            freqs = freqs.to(self._cos.device)
            self._cos = freqs.cos() * self.cos_sin_scale
            self._sin = freqs.sin() * self.cos_sin_scale
        return self._cos, self._sin

    def tables_for(self, positions: torch.Tensor):
        """(cos, sin, positions) as numpy arrays for the native rope: [P, dim/2] tables
        covering every position asked for, and positions [T] int64."""
        if positions is not self._tables_key:  # every layer of one forward pass shares them
            cos, sin = self._table(int(positions.max()) + 1)
            self._tables = (cos.cpu().numpy(), sin.cpu().numpy(), positions.contiguous().numpy())
            self._tables_key = positions
        return self._tables

    def apply(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: [T, heads, dim]; positions: [T] int64."""
        if positions is not self._positions:  # every layer of one forward pass shares them
            cos_t, sin_t = self._table(int(positions.max()) + 1)
            if cos_t.device != positions.device:
                self._cos, self._sin = cos_t, sin_t = cos_t.to(positions.device), sin_t.to(positions.device)
            cos, sin = cos_t[positions].unsqueeze(1), sin_t[positions].unsqueeze(1)  # [T, 1, dim/2]
            self._positions = positions
            self._rotation = torch.complex(cos, sin) if self.interleaved else (cos, sin)
        xf = x.float()  # no copy for float32
        if self.interleaved:
            # pairs (x[2i], x[2i+1]) as complex numbers, rotated by cos + i sin
            xc = torch.view_as_complex(xf.reshape(*xf.shape[:-1], -1, 2).contiguous())
            out = torch.view_as_real(xc * self._rotation).flatten(-2)
        else:
            cos, sin = self._rotation
            x1, x2 = xf[..., : self.dim // 2], xf[..., self.dim // 2 :]
            out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.to(x.dtype)
