"""y = x W^T (+ b) for a weight that lives where the placement put it.

Three kinds of weight, one interface:
  - a torch tensor (dequantized; f32, f16 or bf16, on any device): small float matrices,
    and GPU tensors of a type without a GPU kernel;
  - a native matrix: the GGUF blocks in the mmap (zero-copy) multiplied by
    moebox_native's quantized kernels on the CPU;
  - a GPU matrix (engine/gpu/gguf_matrix.py): the GGUF blocks in VRAM, multiplied by
    Triton kernels.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType

from engine.layers.fused import RowBuffer, as_array, row_output
from engine.native import native_kernels


class NativeMatrix:
    """A [rows, cols] GGUF matrix used in place: `data` is the uint8 view of its blocks."""

    device = torch.device("cpu")

    def __init__(self, data: np.ndarray, ggml_type: GGMLQuantizationType, rows: int, cols: int):
        self.native = native_kernels()
        self.data = np.ascontiguousarray(data)
        self.ggml_type = int(ggml_type)
        self.rows = rows
        self.cols = cols
        self._row: RowBuffer | None = None

    def reuse_row_output(self) -> None:
        """Write single-row results into one buffer kept for this matrix, overwritten by
        the next single-row call: for layers whose caller consumes the result at once."""
        self._row = RowBuffer(self.rows)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, cols] f32/bf16 on the CPU → [T, rows] f32."""
        x = x.float().contiguous()  # no copy for the f32 rows the CPU placement passes
        out, out_np = row_output(x.shape[0], self.rows, self._row)
        # numpy views of CPU tensors cross into the binding faster than DLPack capsules
        self.native.matmul(self.data, self.ggml_type, self.rows, self.cols, as_array(x), out=out_np)
        return out


class Linear:
    """A linear layer over a torch weight [out, in], a NativeMatrix or a GpuQuantMatrix; which
    multiply runs is decided here, once, from the weight."""

    def __init__(self, weight, bias: torch.Tensor | None = None):
        self.weight = weight
        self.bias = bias
        self.native = isinstance(weight, NativeMatrix)
        if not isinstance(weight, torch.Tensor):  # blocks multiplied by their own kernels
            self.out_features, self.in_features = weight.rows, weight.cols
            self.device = weight.device
            self._matmul = weight.matmul  # [T, in] → [T, out]
        else:
            self.out_features, self.in_features = weight.shape
            self.device = weight.device
            self._matmul = self._torch_matmul

    def reuse_row_output(self) -> Linear:
        """See NativeMatrix.reuse_row_output (decode steps allocate no output); no-op for torch weights."""
        if self.native:
            self.weight.reuse_row_output()
        return self

    def _torch_matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.to(self.weight.dtype), self.weight).to(x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in] → [..., out]."""
        if x.dim() == 2:
            y = self._matmul(x)
        else:
            y = self._matmul(x.reshape(-1, self.in_features)).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias
