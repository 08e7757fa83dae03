"""Turning GGUF tensors into layer weights as the placement says."""

from __future__ import annotations

import logging

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from engine.errors import GGUFError
from engine.layers.embedding import Embedding
from engine.layers.linear import Linear, NativeMatrix
from engine.layers.moe import RoutedExperts
from engine.layers.rmsnorm import RMSNorm
from engine.native import cpu_kernels
from engine.placement import Placement

log = logging.getLogger("moebox.load")

Q = GGMLQuantizationType
_FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16)
_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


class _SplitLinear(Linear):
    """Several linears behind the fused interface when their formats cannot be stacked."""

    def __init__(self, parts: list[Linear]):
        self.parts = parts
        self.bias = None
        self.in_features = parts[0].in_features
        self.out_features = sum(p.out_features for p in parts)
        self.device = parts[0].device
        self.native = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=-1)


class Weights:
    """Reads named tensors of an opened GGUF model (engine.gguf_file.GGUFModel)."""

    def __init__(self, gguf, placement: Placement):
        self.gguf = gguf
        self.placement = placement
        self.native = cpu_kernels() is not None
        if not self.native:
            log.warning(
                "the native kernels do not run here: quantized matrices are dequantized to f32 instead"
            )

    def has(self, name: str) -> bool:
        return name in self.gguf

    def _format(self, name: str, tensor: str | None = None) -> tuple[str, str]:
        """(device, format) of `name` as placed; `tensor`: the GGUF tensor whose type decides the
        GPU fallback, where it is not `name` (a tied output head is token_embd placed as output)."""
        device, fmt = self.placement.resolve(name)
        if fmt == "native" and not self.native:
            fmt = "f32"
        if fmt == "gguf":
            fmt = self._gpu_format(tensor or name)
        return device, fmt

    def _gpu_format(self, name: str) -> str:
        """What a tensor placed as "gguf" becomes: its blocks in VRAM where engine/gpu has a kernel
        for its type, else a torch tensor (F32/F16 as they are, anything else bf16, logged)."""
        from engine.plan import gpu_kernel

        ggml_type = self.gguf.tensor(name).ggml_type
        if ggml_type in (Q.F32, Q.F16):
            return "f32" if ggml_type == Q.F32 else "f16"
        if gpu_kernel(ggml_type):
            return "gguf"
        log.info("%s: no GPU kernel for %s, loaded as bf16", name, Q(ggml_type).name)
        return "bf16"

    def _gpu_matrix(self, views: list[np.ndarray], ggml_type: int, shape: tuple[int, ...], device: str):
        from engine.gpu.gguf_matrix import GpuQuantMatrix

        blocks = views[0] if len(views) == 1 else np.concatenate(views, axis=0)
        return GpuQuantMatrix(blocks, ggml_type, shape, device)

    def tensor(self, name: str, dtype: torch.dtype | None = None, device: str | None = None) -> torch.Tensor:
        """The whole tensor dequantized, in its numpy-order shape."""
        info = self.gguf.tensor(name)
        view = self.gguf.view(name)
        if info.ggml_type == Q.F32:
            array = np.array(view, dtype=np.float32)
        elif info.ggml_type == Q.F16:
            array = view.astype(np.float32)
        else:
            array = dequantize(view, info.ggml_type)
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).reshape(info.shape)
        pdevice, fmt = self._format(name)
        return t.to(device=device or pdevice, dtype=dtype or _DTYPES.get(fmt, torch.float32))

    def linear(self, name: str, bias: str | None = None, *, placed_as: str | None = None) -> Linear:
        """placed_as: the name the placement sees (a tied output head is token_embd used as output)."""
        info = self.gguf.tensor(name)
        if len(info.shape) != 2:
            raise GGUFError(f"{self.gguf.path}: {name} has shape {info.shape}; a matrix was expected")
        device, fmt = self._format(placed_as or name, name)
        b = self.tensor(bias, torch.float32) if bias and self.has(bias) else None
        if fmt == "native" and info.ggml_type not in (Q.F32,):
            weight = NativeMatrix(self.gguf.view(name), info.ggml_type, *info.shape)
        elif fmt == "gguf":
            weight = self._gpu_matrix([self.gguf.view(name)], info.ggml_type, info.shape, device)
        else:
            weight = self.tensor(name, _DTYPES.get(fmt, torch.float32), device)
        return Linear(weight, b)

    def fused_linear(self, names: list[str], biases: list[str | None] | None = None) -> Linear:
        """One linear for several matrices that read the same input (q/k/v, gate/up): their
        rows stacked, so one kernel call streams them all. Native blocks of one type are
        stacked as bytes (in memory or VRAM, no requantization); anything else as torch tensors."""
        biases = biases or [None] * len(names)
        formats = {self._format(n) for n in names}
        types = {self.gguf.tensor(n).ggml_type for n in names}
        if formats == {("cuda", "gguf")} and len(types) == 1 and not any(biases):
            infos = [self.gguf.tensor(n) for n in names]
            rows = sum(i.shape[0] for i in infos)
            views = [self.gguf.view(n) for n in names]
            return Linear(self._gpu_matrix(views, types.pop(), (rows, infos[0].shape[1]), "cuda"))
        parts = [self.linear(n, b) for n, b in zip(names, biases, strict=True)]
        weights = [p.weight for p in parts]
        if all(isinstance(w, NativeMatrix) for w in weights):
            if len({w.ggml_type for w in weights}) != 1:
                return _SplitLinear(parts)
            data = np.concatenate([w.data for w in weights], axis=0)
            weight = NativeMatrix(data, weights[0].ggml_type, sum(w.rows for w in weights), weights[0].cols)
        elif not all(isinstance(w, torch.Tensor) for w in weights) or len({w.dtype for w in weights}) != 1:
            return _SplitLinear(parts)
        else:
            weight = torch.cat(weights, dim=0)
        if any(p.bias is not None for p in parts):
            device = parts[0].device
            bias = torch.cat(
                [p.bias if p.bias is not None else torch.zeros(p.out_features, device=device) for p in parts]
            )
        else:
            bias = None
        return Linear(weight, bias)

    def norm(self, name: str, eps: float) -> RMSNorm:
        return RMSNorm(self.tensor(name, torch.float32), eps)

    def embedding(self, name: str) -> Embedding:
        info = self.gguf.tensor(name)
        return Embedding(self.gguf.view(name), info.ggml_type, info.shape[-1])

    def experts(self, prefix: str) -> RoutedExperts:
        """Routed experts of one layer: `{prefix}ffn_{gate,up,down}_exps.weight`."""
        names = [f"{prefix}ffn_{p}_exps.weight" for p in ("gate", "up", "down")]
        infos = [self.gguf.tensor(n) for n in names]
        device, fmt = self._format(names[0])
        if fmt == "native":
            experts, inter, hidden = infos[0].shape
            return RoutedExperts(
                *(self.gguf.view(n) for n in names),
                native=tuple(int(i.ggml_type) for i in infos),
                shape=(experts, hidden, inter),
            )
        if device != "cpu":
            # on the GPU: each stack in its GGUF blocks where engine/gpu has a kernel for its type
            # (the plan put the three on one device), else a bf16 / float tensor
            return RoutedExperts(*(self._device_experts(n, i) for n, i in zip(names, infos, strict=True)))
        return RoutedExperts(*(self.tensor(n) for n in names))

    def _device_experts(self, name: str, info):
        device, fmt = self._format(name)
        if fmt == "gguf":
            return self._gpu_matrix([self.gguf.view(name)], info.ggml_type, info.shape, device)
        return self.tensor(name, _DTYPES.get(fmt, torch.float32), device)
