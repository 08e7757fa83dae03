"""Token embeddings read row-wise from the GGUF: only the rows of the tokens
asked for are dequantized, never the whole table (hundreds of MB for big vocabularies)."""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize


class Embedding:
    def __init__(self, rows: np.ndarray, ggml_type: GGMLQuantizationType, dim: int, dtype=torch.float32):
        """rows: the table as [vocab, bytes per row] (quantized) or [vocab, dim] (float) view."""
        self.rows = rows
        self.ggml_type = GGMLQuantizationType(ggml_type)
        self.dim = dim
        self.dtype = dtype
        self.num_embeddings = rows.shape[0]
        # the native dequantizers (same values as gguf's, 1 ulp) skip numpy's per-call overhead
        self._native = _native_dequantizer(self.ggml_type) if dtype == torch.float32 else None

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [T] int64 → [T, dim]."""
        picked = self.rows[ids.numpy()]
        if self.ggml_type == GGMLQuantizationType.F32:
            values = picked
        elif self.ggml_type == GGMLQuantizationType.F16:
            values = picked.astype(np.float32)
        elif self._native is not None:
            out = torch.empty((picked.shape[0], self.dim), dtype=torch.float32)
            self._native.dequantize(picked, int(self.ggml_type), out.numpy())
            return out
        else:
            values = dequantize(picked, self.ggml_type)
        return (
            torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
            .reshape(-1, self.dim)
            .to(self.dtype)
        )


def _native_dequantizer(ggml_type: GGMLQuantizationType):
    """moebox_native where it dequantizes this format, else None (gguf's numpy code serves)."""
    from engine.native import cpu_kernels

    native = cpu_kernels()
    if native is None or ggml_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        return None
    return native if any(f["type"] == int(ggml_type) for f in native.formats()) else None
