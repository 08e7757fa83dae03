"""Per-token operations of a decoder layer, in two sets that compute the same values.

A decode step runs a few dozen tiny torch ops per layer; on the CPU each one costs
more in dispatch than in arithmetic. `NATIVE_OPS` runs each operation as one
`moebox_native` call (float32 tensors on the CPU: the CPU placement's activations);
`TORCH_OPS` runs the torch expression of its docstring (GPU, or a CPU without the
native kernels). A layer picks its set once, when it is built, from the device of
its weights (`ops_for`); its forward has one path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.native import cpu_kernels


def as_array(x: torch.Tensor):
    """The numpy view of a CPU tensor. Tensors kept from step to step (row buffers, weights,
    cache buffers) carry theirs (`keep_array`): Tensor.numpy() costs about a microsecond,
    as much as a small kernel, and a decode step passes a dozen tensors per layer."""
    view = getattr(x, "_numpy_view", None)
    return view if view is not None else x.numpy()


def keep_array(x: torch.Tensor):
    """Attach x's numpy view to x for as_array (x must never be resized in place); returns it."""
    x._numpy_view = x.numpy()
    return x._numpy_view


class RowBuffer:
    """A float32 [1, n] output kept by a layer for its decode rows (with its numpy view):
    for results the caller consumes before the layer runs again."""

    def __init__(self, n: int):
        self.tensor = torch.empty((1, n), dtype=torch.float32)
        self.array = keep_array(self.tensor)


def row_output(rows: int, n: int, row: RowBuffer | None) -> tuple[torch.Tensor, object]:
    """A float32 [rows, n] result tensor and its numpy view: `row`'s buffer for a single row, else new."""
    if row is not None and rows == 1:
        return row.tensor, row.array
    out = torch.empty((rows, n), dtype=torch.float32)
    return out, out.numpy()


# --- torch: any device, any float dtype -------------------------------------------------------


def torch_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, row: RowBuffer | None = None):
    """x [..., n] → x * rsqrt(mean(x², -1) + eps) * weight, computed in float32, in x's dtype."""
    return torch.rms_norm(x.float(), weight.shape, weight, eps).to(x.dtype)


def torch_rms_norm_(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """rms_norm(x, weight, eps) written over x; returns x."""
    return x.copy_(torch_rms_norm(x, weight, eps))


def torch_silu_mul(gate_up: torch.Tensor, row: RowBuffer | None = None) -> torch.Tensor:
    """gate_up [T, 2n] (gate rows first) → silu(gate) * up, [T, n]."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def torch_attend_one(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, row: RowBuffer | None = None
) -> torch.Tensor:
    """Attention of one query token, grouped-query: q [heads, dim]; k, v [S, kv_heads, dim]
    (the cache) → [1, heads * dim] in q's dtype: softmax(scale · q_h k_g^T) v_g for each
    head h of kv group g."""
    heads, dim = q.shape
    kv_heads = k.shape[1]
    rep = heads // kv_heads
    qg = q.reshape(kv_heads, rep, dim)  # [kv_heads, rep, dim]
    kt = k.to(q.dtype).transpose(0, 1)  # [kv_heads, S, dim]
    vt = v.to(q.dtype).transpose(0, 1)
    scores = torch.bmm(qg, kt.transpose(1, 2))  # [kv_heads, rep, S]
    probs = torch.softmax(scores.float() * scale, dim=-1).to(q.dtype)
    return torch.bmm(probs, vt).reshape(1, heads * dim)


def torch_rope_(rope, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """rope.apply(x, positions); returns the rotated tensor."""
    return rope.apply(x, positions)


def torch_rope_cache_attend(*args, **kwargs) -> None:
    """No fused decode attention in torch: the caller runs rope, the cache update and attend_one."""
    return None


# --- native: float32 rows on the CPU ----------------------------------------------------------


def native_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, row: RowBuffer | None = None):
    """torch_rms_norm for float32 x on the CPU; row: where a single-row result may go."""
    if x.dim() != 2 or x.stride(-1) != 1:
        return native_rms_norm(x.reshape(-1, x.shape[-1]).contiguous(), weight, eps).view(x.shape)
    out, out_np = row_output(x.shape[0], x.shape[1], row)
    cpu_kernels().rms_norm(as_array(x), as_array(weight), eps, out_np)
    return out


def native_rms_norm_(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """torch_rms_norm_ for float32 x [T, n] (rows contiguous) on the CPU."""
    arr = x.numpy()
    cpu_kernels().rms_norm(arr, as_array(weight), eps, arr)  # each row is read whole before it is written
    return x


def native_silu_mul(gate_up: torch.Tensor, row: RowBuffer | None = None) -> torch.Tensor:
    """torch_silu_mul for float32 gate_up [T, 2n] on the CPU; row: as for native_rms_norm."""
    out, out_np = row_output(gate_up.shape[0], gate_up.shape[1] // 2, row)
    cpu_kernels().silu_mul(as_array(gate_up.contiguous()), out_np)
    return out


def native_attend_one(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, row: RowBuffer | None = None
) -> torch.Tensor:
    """torch_attend_one for float32 q on the CPU, over an f32 or f16 cache (others: torch)."""
    if k.dtype not in (torch.float32, torch.float16):
        return torch_attend_one(q, k, v, scale)
    heads, dim = q.shape
    out, out_np = row_output(1, heads * dim, row)
    cpu_kernels().attend_one(q.contiguous().numpy(), k.numpy(), v.numpy(), scale, out_np)
    return out


def native_rope_(rope, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """torch_rope_ written over x (float32 [T, heads, dim], the caller's own buffer)."""
    cos, sin, pos = rope.tables_for(positions)
    cpu_kernels().rope(x.numpy(), cos, sin, pos, rope.interleaved)
    return x


def native_rope_cache_attend(
    qkv: torch.Tensor,
    rope,
    positions: torch.Tensor,
    cache,
    layer: int,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    scale: float,
    row: RowBuffer | None = None,
) -> torch.Tensor | None:
    """One decode token of grouped-query attention in one native call: rotate q and k
    of qkv [1, (heads + 2 kv_heads) · dim] (overwritten), append k and v to the layer's
    cache and attend over it → [1, heads · dim]. None for a cache dtype other than
    f32/f16: the caller then runs the same steps one by one."""
    if cache.dtype not in (torch.float32, torch.float16):
        return None
    k_buf, v_buf = cache.reserve(layer, 1, (n_kv_heads, head_dim), (n_kv_heads, head_dim))
    cos, sin, pos = rope.tables_for(positions)
    out, out_np = row_output(1, n_heads * head_dim, row)
    cpu_kernels().rope_cache_attend(
        qkv.numpy(),
        cos,
        sin,
        int(pos[0]),
        rope.interleaved,
        k_buf.numpy(),
        v_buf.numpy(),
        cache.length,
        n_heads,
        scale,
        out_np,
    )
    return out


@dataclass(frozen=True)
class Ops:
    native: bool
    rms_norm: object
    rms_norm_: object
    silu_mul: object
    attend_one: object
    rope_: object
    rope_cache_attend: object


TORCH_OPS = Ops(
    False,
    torch_rms_norm,
    torch_rms_norm_,
    torch_silu_mul,
    torch_attend_one,
    torch_rope_,
    torch_rope_cache_attend,
)
NATIVE_OPS = Ops(
    True,
    native_rms_norm,
    native_rms_norm_,
    native_silu_mul,
    native_attend_one,
    native_rope_,
    native_rope_cache_attend,
)


def ops_for(device: torch.device | str) -> Ops:
    """The operations for a layer whose weights live on `device`: native on the CPU where the
    kernels run here (activations there are float32), torch anywhere else."""
    on_cpu = torch.device(device).type == "cpu"
    return NATIVE_OPS if on_cpu and cpu_kernels() is not None else TORCH_OPS
