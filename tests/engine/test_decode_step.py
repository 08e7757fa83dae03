"""The one-call decode layer (engine/layers/decode_step.py) against the per-op path.

Both run the same native kernels in the same order on the same inputs, so a dense
layer must give bitwise the same logits. The MoE layer differs only in the router's
softmax (torch's vectorized exp and sum vs a scalar loop in the kernel: a few ulp
on the expert weights, ~1e-7 relative), which moves logits of std ~1 by < 1e-5; we
allow 1e-4. Decode steps follow a 24-token prefill, as in serving.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import model_config
from engine.gguf_file import open_gguf
from engine.layers.decode_step import LayerStep
from engine.models import load_model
from engine.placement import Placement
from engine.tools.synth import write_synthetic_gguf

pytest.importorskip("moebox_native")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    made = {}

    def make(shape: str, qtype: str):
        if (shape, qtype) not in made:
            path = tmp_path_factory.mktemp("models") / f"{shape}-{qtype}.gguf"
            made[shape, qtype] = write_synthetic_gguf(path, shape, qtype=qtype)
        return made[shape, qtype]

    return make


def load(path, kv_cache_dtype=torch.float32):
    gguf = open_gguf(path)
    config = model_config(gguf)
    return config, load_model(
        gguf, config, Placement.preset(config, gpu=False), progress=False, kv_cache_dtype=kv_cache_dtype
    )


def decode_logits(model, ids: list[int], steps: int, one_call: bool, capacity: int = 64) -> torch.Tensor:
    if not hasattr(model, "built_steps"):
        model.built_steps = [layer._step for layer in model.layers]  # built at load
    for layer, step in zip(model.layers, model.built_steps, strict=True):
        layer._step = step if one_call else None  # None: the per-op path
    cache = model.new_cache(capacity)
    token = int(model.forward(torch.tensor(ids), cache)[-1].argmax())
    out = []
    for _ in range(steps):
        logits = model.forward(torch.tensor([token]), cache)
        out.append(logits.clone())
        token = int(logits[-1].argmax())
    return torch.cat(out)


@pytest.mark.parametrize(
    "shape,qtype,kv",
    [
        ("tiny-llama", "Q4_K", torch.float32),
        ("tiny-llama", "Q8_0", torch.float16),
        ("tiny-qwen3moe", "Q4_K", torch.float32),
        ("tiny-qwen3moe", "Q4_K", torch.float16),
    ],
)
def test_one_call_layer_matches_per_op_path(model_file, shape, qtype, kv):
    config, model = load(model_file(shape, qtype), kv)
    ids = torch.randint(0, config.vocab_size, (24,), generator=torch.Generator().manual_seed(0)).tolist()
    ref = decode_logits(model, ids, 12, one_call=False)
    got = decode_logits(model, ids, 12, one_call=True)
    assert all(isinstance(layer._step, LayerStep) for layer in model.layers), "the one-call path did not run"
    if config.architecture == "llama":
        assert torch.equal(got, ref), (got - ref).abs().max()
    else:
        assert (got - ref).abs().max() < 1e-4, (got - ref).abs().max()
        assert torch.equal(got.argmax(-1), ref.argmax(-1))


def test_one_call_layer_across_cache_growth(model_file):
    # the cache buffers grow at 256 entries (KVCache.reserve): steps 250..261 cross it
    config, model = load(model_file("tiny-llama", "Q4_K"))
    ids = torch.randint(0, config.vocab_size, (250,), generator=torch.Generator().manual_seed(1)).tolist()
    ref = decode_logits(model, ids, 12, one_call=False, capacity=300)
    got = decode_logits(model, ids, 12, one_call=True, capacity=300)
    assert torch.equal(got, ref), (got - ref).abs().max()


@pytest.mark.parametrize("shape", ["tiny-deepseek-v3", "tiny-qwen2moe"])
def test_layers_it_does_not_cover_keep_the_per_op_path(model_file, shape):
    # MLA attention; shared experts and qkv biases
    config, model = load(model_file(shape, "Q4_K"))
    decode_logits(model, [1, 2, 3], 2, one_call=True)
    assert all(layer._step is None for layer in model.layers)


def test_float_weights_keep_the_per_op_path(model_file):
    config, model = load(model_file("tiny-llama", "F32"))
    decode_logits(model, [1, 2, 3], 2, one_call=True)
    assert all(layer._step is None for layer in model.layers)


def test_native_layer_rejects_bad_shapes(model_file):
    config, model = load(model_file("tiny-llama", "Q4_K"))
    decode_logits(model, [1, 2, 3], 1, one_call=True)
    step = model.layers[0]._step
    attn = step.attn
    hidden = config.hidden_size
    x = np.zeros(hidden, np.float32)
    cos, sin, _ = attn.rope.tables_for(torch.tensor([0]))
    cache = np.zeros((4, attn.n_kv_heads, attn.head_dim), np.float32)
    with pytest.raises(ValueError, match="no room"):
        step.native.step(x, np.zeros(hidden, np.float32), cos, sin, 0, cache, cache.copy(), 4)
    with pytest.raises(ValueError, match="one token"):
        step.native.step(
            np.zeros(hidden + 1, np.float32), np.zeros(hidden, np.float32), cos, sin, 0, cache, cache, 0
        )
    with pytest.raises(ValueError, match="kv_heads, dim"):
        bad = np.zeros((4, attn.n_kv_heads + 1, attn.head_dim), np.float32)
        step.native.step(x, np.zeros(hidden, np.float32), cos, sin, 0, bad, bad, 0)
    with pytest.raises(ValueError, match="outside"):
        step.native.step(x, np.zeros(hidden, np.float32), cos, sin, 10**6, cache, cache.copy(), 0)
    import moebox_native

    qkv = attn.qkv.weight
    with pytest.raises(ValueError, match="bytes"):
        moebox_native.DecodeLayer(
            hidden=hidden,
            heads=attn.n_heads,
            kv_heads=attn.n_kv_heads,
            dim=attn.head_dim,
            eps=1e-5,
            scale=0.1,
            interleaved=False,
            attn_norm=np.ones(hidden, np.float32),
            ffn_norm=np.ones(hidden, np.float32),
            qkv=qkv.data[:-1],
            qkv_type=qkv.ggml_type,
            o=attn.o.weight.data,
            o_type=attn.o.weight.ggml_type,
            gate_up=qkv.data,
            gate_up_type=qkv.ggml_type,
            down=qkv.data,
            down_type=qkv.ggml_type,
        )
