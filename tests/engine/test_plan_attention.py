"""MLA's prefill expands keys and values for a group of heads at a time, within the bytes the memory
plan counts as work buffers (engine/layers/mla.py EXPANDED_BYTES): grouped or not, the logits are
the same. Heads are independent, so only the order of floating-point work may differ: bound 1e-5 of
the logit scale (measured: equal)."""

from __future__ import annotations

import torch

import engine.layers.mla as mla
from engine.config import model_config
from engine.gguf_file import open_gguf
from engine.models import load_model
from engine.placement import Placement
from engine.tools.synth import write_synthetic_gguf


def test_expanded_heads():
    assert mla.expanded_heads(128, 32768, 448, 4) == 4
    assert mla.expanded_heads(128, 100, 448, 4) == 128
    assert mla.expanded_heads(128, 10**7, 448, 4) == 1
    assert mla.expanded_heads(4, 0, 448, 4) == 4


def test_head_groups_give_the_same_logits(tmp_path, monkeypatch):
    path = write_synthetic_gguf(tmp_path / "v3.gguf", "tiny-deepseek-v3", qtype="F32", seed=1)
    ids = torch.randint(0, 250, (40,), generator=torch.Generator().manual_seed(0))
    with open_gguf(path) as gguf:
        config = model_config(gguf)
        model = load_model(gguf, config, Placement.preset(config, gpu=False), progress=False)
        whole = model.forward(ids, model.new_cache(64), all_logits=True)
        calls = []
        grouped_heads = mla.expanded_heads
        monkeypatch.setattr(mla, "EXPANDED_BYTES", 1)  # one head at a time
        monkeypatch.setattr(mla, "expanded_heads", lambda *a: calls.append(grouped_heads(*a)) or calls[-1])
        grouped = model.forward(ids, model.new_cache(64), all_logits=True)
    assert calls and set(calls) == {1}
    scale = whole.abs().max()
    print(f"max |Δ| {(whole - grouped).abs().max():.3g} of {scale:.3g}")
    assert (whole - grouped).abs().max() <= 1e-5 * scale
