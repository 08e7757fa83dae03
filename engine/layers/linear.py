"""y = x W^T (+ b) for a weight that lives where the placement put it.

Two kinds of weight, one interface:
  - a torch tensor (dequantized; f32 or bf16, on any device) — the GPU placement,
    and small float matrices on the CPU;
  - a native matrix: the GGUF blocks in the mmap (zero-copy) multiplied by
    moebox_native's quantized kernels on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType

from engine.errors import NativeUnavailableError
from engine.layers.fused import RowBuffer, as_array, row_output


def native_module():
    """moebox_native with its matmul kernels, or a clear error."""
    try:
        import moebox_native
    except ImportError as exc:
        raise NativeUnavailableError(
            f"the native kernels are not installed ({exc}); reinstall moebox with `pip install .`"
        ) from exc
    if not hasattr(moebox_native, "matmul"):
        raise NativeUnavailableError(
            "this build of moebox_native has no matmul kernels; reinstall moebox with `pip install .`"
        )
    return moebox_native


def native_available() -> bool:
    try:
        native_module()
    except NativeUnavailableError:
        return False
    return True


class NativeMatrix:
    """A [rows, cols] GGUF matrix used in place: `data` is the uint8 view of its blocks."""

    def __init__(self, data: np.ndarray, ggml_type: GGMLQuantizationType, rows: int, cols: int):
        self.native = native_module()
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
        if x.dtype != torch.float32:
            x = x.float()
        if not x.is_contiguous():
            x = x.contiguous()
        out, out_np = row_output(x.shape[0], self.rows, self._row)
        # numpy views of CPU tensors cross into the binding faster than DLPack capsules
        self.native.matmul(self.data, self.ggml_type, self.rows, self.cols, as_array(x), out=out_np)
        return out


class Linear:
    """A linear layer over a torch weight [out, in] or a NativeMatrix."""

    def __init__(self, weight: torch.Tensor | NativeMatrix, bias: torch.Tensor | None = None):
        self.weight = weight
        self.bias = bias
        self.native = isinstance(weight, NativeMatrix)
        if self.native:
            self.out_features, self.in_features = weight.rows, weight.cols
        else:
            self.out_features, self.in_features = weight.shape

    def reuse_row_output(self) -> Linear:
        """See NativeMatrix.reuse_row_output (decode steps allocate no output); no-op for torch weights."""
        if self.native:
            self.weight.reuse_row_output()
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in] → [..., out] in x's dtype."""
        if self.native and x.dim() == 2 and x.dtype == torch.float32:
            # the decode path: [T, in] f32 straight into the kernel, nothing to convert or reshape
            y = self.weight.matmul(x)
            return y if self.bias is None else y + self.bias
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self.native:
            y = self.weight.matmul(x2)
            if y.dtype != x.dtype:
                y = y.to(x.dtype)
        else:
            y = torch.nn.functional.linear(x2.to(self.weight.dtype), self.weight).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)
