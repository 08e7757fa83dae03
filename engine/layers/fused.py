"""Per-token operations of a decoder layer, fused into one native call on the CPU.

A decode step runs a few dozen tiny torch ops per layer; on the CPU each one costs
more in dispatch than in arithmetic. Every function here computes the torch
expression in its docstring: as one `moebox_native` call when its tensors are
float32 on the CPU (and the native kernels are built), as that torch expression
anywhere else (GPU, other dtypes). Which one runs follows from the tensors alone,
so model code stays the same on every device.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.cache
def cpu_kernels():
    """moebox_native when it has the fused ops and runs on this CPU, else None."""
    try:
        from engine.native import native_kernels

        native = native_kernels()
    except Exception:  # not built, or this CPU lacks AVX2: the torch expressions serve
        return None
    return native if hasattr(native, "attend_one") else None


def _on_cpu_f32(x: torch.Tensor) -> bool:
    return x.dtype == torch.float32 and x.is_cpu


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


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, row: RowBuffer | None = None) -> torch.Tensor:
    """x [T, n] f32 → x * rsqrt(mean(x², -1) + eps) * weight (weight f32, on x's device).
    row: where a single-row result may go (natively computed results only)."""
    native = cpu_kernels()
    if native is not None and x.dim() == 2 and _on_cpu_f32(x) and x.stride(-1) == 1:
        out, out_np = row_output(x.shape[0], x.shape[1], row)
        native.rms_norm(as_array(x), as_array(weight), eps, out_np)
        return out
    if x.shape[0] == 1:
        # torch.rms_norm's CPU path is a dozen small ops with dtype round trips; these
        # four compute the same float32 values (same order)
        return (x * x.square().mean(-1, keepdim=True).add_(eps).rsqrt_()).mul_(weight)
    return torch.rms_norm(x, weight.shape, weight, eps)


def rms_norm_(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """rms_norm(x, weight, eps) written over x (x [T, n] f32, rows contiguous); returns x."""
    native = cpu_kernels()
    if native is not None and x.dim() == 2 and _on_cpu_f32(x) and x.stride(-1) == 1:
        arr = x.numpy()
        native.rms_norm(arr, as_array(weight), eps, arr)  # each row is read whole before it is written
        return x
    return x.copy_(rms_norm(x, weight, eps))


def silu_mul(gate_up: torch.Tensor, row: RowBuffer | None = None) -> torch.Tensor:
    """gate_up [T, 2n] (gate rows first) → silu(gate) * up, [T, n]. row: as for rms_norm."""
    native = cpu_kernels()
    if native is not None and gate_up.dim() == 2 and _on_cpu_f32(gate_up) and gate_up.stride(-1) == 1:
        out, out_np = row_output(gate_up.shape[0], gate_up.shape[1] // 2, row)
        native.silu_mul(as_array(gate_up), out_np)
        return out
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def attend_one(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, row: RowBuffer | None = None
) -> torch.Tensor:
    """Attention of one query token, grouped-query: q [heads, dim]; k, v [S, kv_heads, dim]
    (the cache; f32 or f16 on the CPU) → [1, heads * dim] in q's dtype:
    softmax(scale · q_h k_g^T) v_g for each head h of kv group g. row: as for rms_norm."""
    heads, dim = q.shape
    kv_heads = k.shape[1]
    native = cpu_kernels()
    if (
        native is not None
        and _on_cpu_f32(q)
        and q.is_contiguous()
        and k.dtype == v.dtype
        and k.dtype in (torch.float32, torch.float16)
        and k.device.type == "cpu"
    ):
        out, out_np = row_output(1, heads * dim, row)
        native.attend_one(q.numpy(), k.numpy(), v.numpy(), scale, out_np)
        return out
    rep = heads // kv_heads
    qg = q.reshape(kv_heads, rep, dim)  # [kv_heads, rep, dim]
    if k.dtype != q.dtype:
        k, v = k.to(q.dtype), v.to(q.dtype)
    kt = k.transpose(0, 1)  # [kv_heads, S, dim]
    vt = v.transpose(0, 1)
    scores = torch.bmm(qg, kt.transpose(1, 2))  # [kv_heads, rep, S]
    if q.dtype == torch.float32:  # no conversions, scale in place
        probs = torch.softmax(scores.mul_(scale), dim=-1)
    else:
        probs = torch.softmax(scores.float() * scale, dim=-1).to(q.dtype)
    return torch.bmm(probs, vt).reshape(1, heads * dim)


def rope_(rope, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """rope.apply(x, positions), overwriting x where that is cheaper (x [T, heads, dim]
    must be the caller's own buffer). Returns the rotated tensor (x or a new one)."""
    native = cpu_kernels()
    if native is not None and _on_cpu_f32(x) and x.stride(-1) == 1 and positions.device.type == "cpu":
        cos, sin, pos = rope.tables_for(positions)
        native.rope(x.numpy(), cos, sin, pos, rope.interleaved)
        return x
    return rope.apply(x, positions)


def rope_cache_attend(
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
    cache and attend over it → [1, heads · dim]. None where this cannot run natively
    (not one f32 row on the CPU, or a cache dtype other than f32/f16): the caller then
    runs the same steps as torch ops."""
    native = cpu_kernels()
    if (
        native is None
        or qkv.shape[0] != 1
        or not _on_cpu_f32(qkv)
        or not qkv.is_contiguous()
        or not positions.is_cpu
        or cache.dtype not in (torch.float32, torch.float16)
    ):
        return None
    k_buf, v_buf = cache.reserve(layer, 1, (n_kv_heads, head_dim), (n_kv_heads, head_dim))
    if k_buf.device.type != "cpu":
        return None
    cos, sin, pos = rope.tables_for(positions)
    out, out_np = row_output(1, n_heads * head_dim, row)
    native.rope_cache_attend(
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
