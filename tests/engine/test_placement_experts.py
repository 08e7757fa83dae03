"""Routed experts held on the compute device (what the plan puts on the GPU): the MoE layer loops
over the experts that tokens routed to, each stack a GpuQuantMatrix (GGUF blocks) or a torch
tensor. Checked on the CPU against a float64 reference from gguf.quants.dequantize: the torch
stacks directly, the GpuQuantMatrix stacks through Triton's CPU interpreter (TRITON_INTERPRET=1,
in a subprocess because Triton reads it when the kernels are imported)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from engine.layers.moe import RoutedExperts
from engine.tools.synth import random_tensor_bytes

Q = GGMLQuantizationType
E, HIDDEN, INTER = 8, 256, 256


def expert_blocks(seed: int = 0):
    """Q4_K gate/up [E, inter, hidden] and Q6_K down [E, hidden, inter] (as the R1 files mix them)."""
    rng = np.random.default_rng(seed)
    gate = random_tensor_bytes(Q.Q4_K, (E, INTER, HIDDEN), rng, 0.05)
    up = random_tensor_bytes(Q.Q4_K, (E, INTER, HIDDEN), rng, 0.05)
    down = random_tensor_bytes(Q.Q6_K, (E, HIDDEN, INTER), rng, 0.05)
    return (
        (gate, Q.Q4_K, (E, INTER, HIDDEN)),
        (up, Q.Q4_K, (E, INTER, HIDDEN)),
        (down, Q.Q6_K, (E, HIDDEN, INTER)),
    )


def dense(blocks, ggml_type, shape) -> np.ndarray:
    return dequantize(blocks.reshape(shape[0] * shape[1], -1), ggml_type).reshape(shape).astype(np.float64)


def reference(stacks, x: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    g, u, d = (dense(*s) for s in stacks)
    out = np.zeros((x.shape[0], HIDDEN))
    for t in range(x.shape[0]):
        for e, w in zip(ids[t], weights[t], strict=True):
            a, b = g[e] @ x[t], u[e] @ x[t]
            out[t] += w * (d[e] @ (a / (1 + np.exp(-a)) * b))
    return out


def routing(t: int, k: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(E - 2, size=k, replace=False) for _ in range(t)])  # experts 6, 7 unused
    weights = rng.uniform(0.1, 1.0, size=(t, k))
    x = rng.standard_normal((t, HIDDEN))
    return x, ids, weights


def test_torch_stacks_on_the_device_match_the_reference():
    stacks = expert_blocks()
    experts = RoutedExperts(*(torch.from_numpy(dense(*s)).float() for s in stacks))
    assert experts.native is None and experts.hidden == HIDDEN
    for t in (1, 5):
        x, ids, weights = routing(t)
        out = experts(torch.from_numpy(x).float(), torch.from_numpy(ids), torch.from_numpy(weights).float())
        ref = reference(stacks, x, ids, weights)
        # f32 sums of 256-long dot products of values ~1e-1: errors ~1e-6 of the output's scale
        np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
        job = experts.submit(
            torch.from_numpy(x).float(), torch.from_numpy(ids), torch.from_numpy(weights).float()
        )
        assert torch.equal(job.wait(), out)


def test_gpu_matrix_stacks_match_the_reference_in_the_triton_interpreter(tmp_path):
    script = textwrap.dedent(
        f"""
        import numpy as np, torch
        import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_placement_experts import expert_blocks, reference, routing, dense, HIDDEN
        from engine.gpu.gguf_matrix import GpuQuantMatrix
        from engine.layers.moe import RoutedExperts

        stacks = expert_blocks()
        mats = [GpuQuantMatrix(b, t, shape, "cpu") for b, t, shape in stacks]
        # one stack as a bf16 tensor: a type without a GPU kernel loads so, beside GPU matrices
        mixed = [mats[0], torch.from_numpy(dense(*stacks[1])).to(torch.bfloat16), mats[2]]
        for experts, name in ((RoutedExperts(*mats), "gguf"), (RoutedExperts(*mixed), "mixed")):
            assert experts.hidden == HIDDEN
            for t in (1, 4):
                x, ids, weights = routing(t, seed=t)
                out = experts(torch.from_numpy(x).float(), torch.from_numpy(ids), torch.from_numpy(weights).float())
                ref = reference(stacks, x, ids, weights)
                err = np.abs(out.numpy() - ref).max() / np.abs(ref).max()
                print(name, t, err)
                # T = 1: the GEMV multiplies in f32 (error ~1e-6); T >= 2 rounds activations and
                # weight tiles to bf16 (8 mantissa bits, relative 2^-9 per term, ~1e-3 over the
                # sums); the bf16 up stack rounds its weights at any T
                assert err < (1e-5 if t == 1 and name == "gguf" else 1e-2), (name, t, err)
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    print(res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
