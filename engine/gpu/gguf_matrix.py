"""GPU matrices that keep the GGUF file's quantization in VRAM.

    m = GpuQuantMatrix(blocks, ggml_type, (rows, cols))        # or (experts, rows, cols)
    y = m.matmul(x)                                             # x [T, cols] bf16/f32 -> [T, rows]

The blocks are repacked once, exactly, into aligned planes (engine/gpu/gguf_layout.py) and
multiplied by the Triton kernels of engine/gpu/gguf_kernels.py:
  T = 1      GEMV: weights dequantized in registers, f32 products and sums (x used as given);
  T >= 2     tl.dot on weight tiles dequantized to bf16 in registers, activations rounded to
             bf16, f32 accumulation (tensor cores); 16-token tiles up to T = 16, larger above.
BF16 matrices stay torch tensors multiplied by torch (bf16 activations).
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType

from engine.gpu import gguf_kernels as kernels
from engine.gpu.gguf_kernels import PlaneArgs
from engine.gpu.gguf_layout import GPU_TYPES, layout_of, repack

Q = GGMLQuantizationType


def gpu_supported(ggml_type: int) -> bool:
    """Whether a GGUF tensor type can live on the GPU in its own format."""
    return ggml_type in GPU_TYPES


def _multiprocessors(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # the Triton interpreter runs programs one after another: no split is worth it


class GpuQuantMatrix:
    """A [rows, cols] GGUF matrix, or a stack of `n_experts` of them, held in VRAM at its GGUF size."""

    def __init__(
        self, blocks: np.ndarray, ggml_type: int, shape: tuple[int, ...], device: str | torch.device = "cuda"
    ):
        if len(shape) not in (2, 3):
            raise ValueError(f"shape must be (rows, cols) or (experts, rows, cols), not {shape}")
        self.n_experts = shape[0] if len(shape) == 3 else 1
        self.rows, self.cols = shape[-2:]
        self.ggml_type = int(ggml_type)
        self.device = torch.device(device)
        stacked_rows = self.n_experts * self.rows
        if self.ggml_type == Q.BF16:
            raw = torch.from_numpy(
                np.ascontiguousarray(blocks).view(np.int16).reshape(stacked_rows, self.cols)
            )
            self.weight = raw.to(self.device).view(torch.bfloat16)
            self.nbytes = self.weight.nbytes
            return
        self.layout = layout_of(self.ggml_type)
        self.planes = repack(np.ascontiguousarray(blocks), self.layout, stacked_rows, self.cols, self.device)
        self.nbytes = self.planes.nbytes
        levels = kernels.levels_table(self.device)
        self._args = [self._expert_args(e, levels) for e in range(self.n_experts)]
        self._sms = _multiprocessors(self.device)

    def _expert_args(self, e: int, levels: torch.Tensor) -> PlaneArgs:
        planes = self.planes
        if self.n_experts > 1:
            rows = slice(e * self.rows, (e + 1) * self.rows)
            planes = type(planes)(*(t[rows] if t is not None else None for t in planes.fields()))
        return PlaneArgs(planes, levels)

    def _expert(self, expert: int | None) -> int:
        if expert is None:
            if self.n_experts > 1:
                raise ValueError(f"a stack of {self.n_experts} matrices needs an expert index")
            return 0
        if not 0 <= expert < self.n_experts:
            raise IndexError(f"expert {expert} of {self.n_experts}")
        return expert

    def matmul(self, x: torch.Tensor, expert: int | None = None) -> torch.Tensor:
        """x [T, cols] bf16 or f32 on the device -> [T, rows] in x's dtype (f32 accumulation)."""
        e = self._expert(expert)
        if x.dim() != 2 or x.shape[1] != self.cols:
            raise ValueError(f"x must be [T, {self.cols}], not {list(x.shape)}")
        if x.dtype not in (torch.bfloat16, torch.float32):
            raise ValueError(f"x must be bf16 or f32, not {x.dtype}")
        if self.ggml_type == Q.BF16:
            w = self.weight[e * self.rows : (e + 1) * self.rows]
            return torch.matmul(x.to(torch.bfloat16), w.t()).to(x.dtype)
        x = x.contiguous()
        T = x.shape[0]
        if T == 0:
            return x.new_empty((0, self.rows))
        if T == 1:
            tiles, split = kernels.gemv_plan(self.rows, self._sms)
            return kernels.gemv(x, self._args[e], self.layout, self.rows, self.cols, tiles, split)
        tiles, split = kernels.dot_plan(self.rows, T, self._sms)
        return kernels.dot(x, self._args[e], self.layout, self.rows, self.cols, tiles, split)

    def kernel_args(self, expert: int | None = None) -> PlaneArgs:
        """The tensors the kernels read for one matrix (for calling engine.gpu.gguf_kernels directly)."""
        return self._args[self._expert(expert)]

    def dequantize(self, dtype: torch.dtype = torch.bfloat16, expert: int | None = None) -> torch.Tensor:
        """[rows, cols] values; in f32 exactly gguf.quants.dequantize's."""
        e = self._expert(expert)
        if self.ggml_type == Q.BF16:
            return self.weight[e * self.rows : (e + 1) * self.rows].to(dtype)
        return kernels.dequantize(self._args[e], self.layout, self.rows, self.cols, dtype, self.device)
