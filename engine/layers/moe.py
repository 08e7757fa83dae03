"""Mixture-of-Experts block: router, routed experts, shared experts.

Routers, by the file's expert_gating_func:
  - softmax (DeepSeek-V2, Qwen): top-k of softmax(logits); with n_group > 1,
    DeepSeek-V2's group-limited greedy keeps the topk_group groups with the
    highest single expert score first;
  - sigmoid (DeepSeek-V3/R1): choice = sigmoid(logits) + exp_probs_b; groups
    ranked by the sum of their two best choices, top-k inside the kept groups;
    weights are the sigmoid scores (bias not included).
Then optional normalization of the k weights (norm_topk_prob) and the routed
scaling factor.

Routed experts run through a RoutedExperts object. With the activations on a GPU,
`submit()` starts them on the CPU kernels and returns at once, so the shared experts
are computed on the GPU meanwhile; `wait()` returns their sum. With the activations
on the CPU there is nothing to overlap (the shared experts would need the same
cores), so the experts run on the calling thread (`__call__`). Experts the placement
put on the GPU (engine/plan.py fits the last layers' there) are computed there, one
routed-to expert after another, by the GGUF-block kernels of engine/gpu or by torch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType

from engine.layers.fused import RowBuffer, as_array, row_output
from engine.layers.linear import Linear, NativeMatrix
from engine.layers.mlp import GatedMLP
from engine.native import cpu_kernels, native_kernels


class Router:
    def __init__(
        self,
        weight: torch.Tensor,  # [experts, hidden] f32
        top_k: int,
        *,
        gating: str = "softmax",
        bias: torch.Tensor | None = None,  # exp_probs_b [experts]
        n_groups: int = 1,
        n_groups_used: int = 1,
        normalize: bool = False,
        scale: float = 1.0,
    ):
        self.weight = weight.float()
        # On the CPU the logits come from the kernel threads: the f32 router matrix
        # (1-3.5 MB) is read from RAM each token, by one torch thread otherwise.
        self.native_logits: NativeMatrix | None = None  # the f32 weight for the kernels, on the CPU
        if self.weight.is_cpu and cpu_kernels() is not None:
            w = self.weight.contiguous()
            self.native_logits = NativeMatrix(
                w.numpy().view(np.uint8).reshape(-1), GGMLQuantizationType.F32, *w.shape
            )
            self.native_logits.reuse_row_output()
        self.top_k = top_k
        self.gating = gating
        self.bias = bias.float() if bias is not None else None
        self.n_groups, self.n_groups_used = n_groups, n_groups_used
        self.normalize = normalize
        self.scale = scale

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [T, hidden] → (ids [T, k] int64, weights [T, k] f32)."""
        if self.native_logits is not None:
            logits = self.native_logits.matmul(x)  # [T, experts]
        else:
            logits = F.linear(x.float(), self.weight)
        if self.gating == "sigmoid":
            scores = logits.sigmoid()
            choice = scores + self.bias if self.bias is not None else scores
        else:
            scores = logits.softmax(dim=-1)
            choice = scores
        if self.n_groups > 1 and self.n_groups_used < self.n_groups:
            t, e = choice.shape
            grouped = choice.view(t, self.n_groups, e // self.n_groups)
            if self.gating == "sigmoid":
                group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # [T, groups]
            else:
                group_scores = grouped.max(dim=-1).values
            keep = torch.zeros_like(group_scores, dtype=torch.bool)
            keep.scatter_(1, group_scores.topk(self.n_groups_used, dim=-1).indices, True)
            choice = choice.masked_fill(~keep.repeat_interleave(e // self.n_groups, dim=1), float("-inf"))
        top, ids = choice.topk(self.top_k, dim=-1)
        weights = top if choice is scores else scores.gather(1, ids)
        if self.normalize:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return ids, weights * self.scale if self.scale != 1.0 else weights


class _Done:
    def __init__(self, value: torch.Tensor):
        self.value = value

    def wait(self) -> torch.Tensor:
        return self.value


class _NativeJob:
    def __init__(self, job, out: torch.Tensor, keep: tuple, device: torch.device):
        self.job, self.out, self.keep, self.device = job, out, keep, device

    def wait(self) -> torch.Tensor:
        self.job.wait()
        return self.out.to(self.device, non_blocking=True)


class _TensorStack:
    """Stacked expert matrices [E, rows, cols] as a torch tensor (bf16 or f32, any device), with
    GpuQuantMatrix's `matmul(x, expert)`, so the experts' loop has one path for both."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self.rows = weight.shape[1]

    def matmul(self, x: torch.Tensor, expert: int) -> torch.Tensor:
        """x [T, cols] -> [T, rows] in x's dtype."""
        return (x.to(self.weight.dtype) @ self.weight[expert].t()).to(x.dtype)


class RoutedExperts:
    """The routed experts of one layer: stacked gate/up [E, inter, hidden] and
    down [E, hidden, inter], as GGUF blocks for the native CPU kernels, or held on the
    device the activations live on: GPU matrices (engine/gpu/gguf_matrix.py GpuQuantMatrix
    stacks, the blocks in VRAM) or torch tensors. Which one is decided here, once."""

    def __init__(self, gate, up, down, *, native: tuple[int, int, int] | None = None, shape=None):
        """Native: uint8 views of the GGUF tensors, native = their ggml types,
        shape = (experts, hidden, inter). Otherwise each of gate, up, down is a torch tensor
        [E, rows, cols] or a GpuQuantMatrix stack of E [rows, cols] matrices."""
        self.gate, self.up, self.down = gate, up, down
        self.native = None
        if native is not None:
            experts, hidden, inter = shape
            self.native = native_kernels().MoeExperts(
                np.ascontiguousarray(gate),
                native[0],
                np.ascontiguousarray(up),
                native[1],
                np.ascontiguousarray(down),
                native[2],
                experts,
                hidden,
                inter,
            )
            self.hidden = hidden
            self._row = RowBuffer(hidden)  # single-token results of __call__, consumed at once
        else:
            self._stacks = [_TensorStack(w) if isinstance(w, torch.Tensor) else w for w in (gate, up, down)]
            self.hidden = self._stacks[2].rows

    def __call__(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ_j weights[t,j] · expert_{ids[t,j]}(x[t]) computed now, on the calling thread. A
        single-token result lives in a buffer that the next call overwrites."""
        if self.native is None:
            return self._device_forward(x, ids, weights)
        # the calling thread joins the kernel threads: no hand-over to the background driver
        out, out_np = row_output(x.shape[0], self.hidden, self._row)
        self.native.forward(
            as_array(x.float().contiguous()),
            as_array(ids.contiguous()),
            as_array(weights.float().contiguous()),
            out=out_np,
        )
        return out

    def submit(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor):
        """Start out[t] = Σ_j weights[t,j] · expert_{ids[t,j]}(x[t]); returns an object with wait()."""
        if self.native is not None:
            # the routed experts live in RAM: activations and routing go to the CPU kernels
            xs = x.float().contiguous().cpu()
            ids32 = ids.to(torch.int32).contiguous().cpu()
            w32 = weights.float().contiguous().cpu()
            out = torch.empty((x.shape[0], self.hidden), dtype=torch.float32)
            job = self.native.submit(xs, ids32, w32, out=out)
            return _NativeJob(job, out, (xs, ids32, w32), x.device)
        return _Done(self._device_forward(x, ids, weights))

    def _device_forward(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The experts held beside x, one expert that tokens routed to after another."""
        gate, up, down = self._stacks
        out = torch.zeros((x.shape[0], self.hidden), dtype=torch.float32, device=x.device)
        for e in ids.unique().tolist():
            tok, slot = (ids == e).nonzero(as_tuple=True)
            xe = x[tok]  # [tokens routed to e, hidden]
            h = F.silu(gate.matmul(xe, expert=e)) * up.matmul(xe, expert=e)  # [tokens, inter]
            y = down.matmul(h, expert=e).float()  # [tokens, hidden]
            out.index_add_(0, tok, y * weights[tok, slot, None])
        return out


class MoE:
    """Router → routed experts (+ shared experts, computed meanwhile) → sum."""

    def __init__(
        self,
        router: Router,
        experts: RoutedExperts,
        shared: GatedMLP | None = None,
        shared_gate: Linear | None = None,  # qwen2moe: sigmoid(x · g) scales the shared expert
    ):
        self.router, self.experts, self.shared, self.shared_gate = router, experts, shared, shared_gate
        # With the activations on a GPU, the shared experts run there while the CPU computes the
        # routed ones. On the CPU they would only compete for the same cores: one after the other.
        self.overlap = router.weight.device.type != "cpu"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        ids, weights = self.router(x)
        if self.overlap:
            job = self.experts.submit(x, ids, weights)
            shared = self._shared(x)
            out = job.wait().to(x.dtype)
        else:
            out = self.experts(x, ids, weights).to(x.dtype)
            shared = self._shared(x)
        return out + shared if shared is not None else out

    def _shared(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.shared is None:
            return None
        shared = self.shared(x)
        if self.shared_gate is not None:
            shared = shared * torch.sigmoid(self.shared_gate(x))
        return shared
