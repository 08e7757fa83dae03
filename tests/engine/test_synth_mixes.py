"""DeepSeek-R1-shaped files with the tensor-type mixes of the published GGUFs, and sparse
files (headers real, tensor data a hole) to plan them without the real file.

Published figures (engine/tools/synth.py's MIXES says where each comes from):
  Q4_K_M     361 F32, 606 Q4_K, 58 Q6_K                          376.650 GiB of tensors
  UD-Q2_K_XL 361 F32, 171 Q2_K, 3 Q3_K, 306 Q4_K, 184 Q6_K       parts of 49.8+50+50+50+26.8 GB
  UD-IQ1_S   361 F32, 190 Q4_K, 116 Q5_K, 184 Q6_K, 6 IQ2_XXS,
             168 IQ1_S                                           130.60 GiB
The loaders print GiB with 2-3 decimals and Hugging Face GB with one, so the sizes are
compared to that precision.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
import torch

from engine.errors import MoeboxError
from engine.gguf_file import open_gguf
from engine.llm import LLM
from engine.tools.synth import MIXES, write_synthetic_gguf
from moebox.cli import main as moebox

GiB = 2**30

PUBLISHED = {
    "Q4_K_M": ({"F32": 361, "Q4_K": 606, "Q6_K": 58}, 376.650 * GiB, 0.0005 * GiB),
    "UD-Q2_K_XL": (
        {"F32": 361, "Q2_K": 171, "Q3_K": 3, "Q4_K": 306, "Q6_K": 184},
        (49.8 + 50 + 50 + 50 + 26.8) * 1e9,
        0.25e9,  # five sizes rounded to 0.1 GB (and the GGUF headers inside them)
    ),
    "UD-IQ1_S": (
        {"F32": 361, "Q4_K": 190, "Q5_K": 116, "Q6_K": 184, "IQ2_XXS": 6, "IQ1_S": 168},
        130.60 * GiB,
        0.005 * GiB,
    ),
}


def disk_bytes(path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.mark.parametrize("mix", list(PUBLISHED))
def test_r1_mixes_match_the_published_files(tmp_path, mix):
    counts, size, tolerance = PUBLISHED[mix]
    path = write_synthetic_gguf(tmp_path / f"r1-{mix}.gguf", "deepseek-r1", qtype=mix, sparse=True)
    tensors = list(open_gguf(path))
    assert len(tensors) == 1025
    assert Counter(t.ggml_type.name for t in tensors) == counts
    total = sum(t.n_bytes for t in tensors)
    assert abs(total - size) <= tolerance, (total / GiB, size / GiB)
    # the whole file is there to read (the data section as a hole) but takes no disk
    assert os.path.getsize(path) > total
    assert disk_bytes(path) < 16 * 2**20, disk_bytes(path)


def test_r1_mix_types_by_tensor(tmp_path):
    def types(mix):
        path = write_synthetic_gguf(tmp_path / f"{mix}.gguf", "deepseek-r1", qtype=mix, sparse=True)
        return {t.name: t.ggml_type.name for t in open_gguf(path)}

    q4km = types("Q4_K_M")
    # llama.cpp's use_more_bits for 61 layers: 0-6, 53-60 and 9, 12, ..., 51
    assert q4km["blk.0.ffn_down.weight"] == q4km["blk.9.ffn_down_exps.weight"] == "Q6_K"
    assert q4km["blk.9.ffn_down_shexp.weight"] == q4km["blk.60.ffn_down_exps.weight"] == "Q6_K"
    assert q4km["blk.7.ffn_down_exps.weight"] == q4km["blk.9.ffn_up_exps.weight"] == "Q4_K"
    assert q4km["output.weight"] == "Q6_K" and q4km["token_embd.weight"] == "Q4_K"
    assert q4km["blk.3.ffn_gate_inp.weight"] == q4km["blk.3.exp_probs_b.bias"] == "F32"

    q2xl = types("UD-Q2_K_XL")
    assert [q2xl[f"blk.{i}.ffn_down_exps.weight"] for i in (3, 5, 6, 60)] == ["Q3_K", "Q3_K", "Q2_K", "Q2_K"]
    assert q2xl["blk.3.ffn_gate_exps.weight"] == "Q2_K" and q2xl["blk.3.ffn_up_shexp.weight"] == "Q4_K"
    assert q2xl["blk.3.attn_kv_b.weight"] == q2xl["blk.3.attn_kv_a_mqa.weight"] == "Q6_K"
    assert q2xl["blk.3.attn_output.weight"] == q2xl["blk.3.attn_q_b.weight"] == "Q4_K"

    iq1s = types("UD-IQ1_S")
    assert [iq1s[f"blk.{i}.ffn_down_exps.weight"] for i in (3, 8, 9)] == ["IQ2_XXS", "IQ2_XXS", "IQ1_S"]
    assert iq1s["blk.3.ffn_gate_shexp.weight"] == "Q5_K" and iq1s["blk.3.ffn_down_shexp.weight"] == "Q6_K"


def test_sparse_file_has_the_headers_of_the_written_one(tmp_path):
    # Same shape and types: the sparse file must have the size and the very bytes before the
    # tensor data (header, metadata, tensor records) of the file with data, and its tensor
    # data reads as zeros.
    full = write_synthetic_gguf(tmp_path / "full.gguf", "tiny-deepseek-v3", qtype="Q4_K_M")
    sparse = write_synthetic_gguf(tmp_path / "sparse.gguf", "tiny-deepseek-v3", qtype="Q4_K_M", sparse=True)
    assert os.path.getsize(full) == os.path.getsize(sparse)
    a, b = open_gguf(full), open_gguf(sparse)
    records = [[(t.name, t.ggml_type, t.shape, t.n_bytes, t.offset) for t in g] for g in (a, b)]
    assert records[0] == records[1]
    data_start = min(t.offset for t in a)
    assert full.read_bytes()[:data_start] == sparse.read_bytes()[:data_start]  # header, metadata, records
    assert {t.ggml_type.name for t in a} == {"F32", "Q4_K", "Q6_K"}
    assert not np.asarray(b.raw("blk.1.ffn_gate_exps.weight")).any()
    assert np.asarray(a.raw("blk.1.ffn_gate_exps.weight")).any()


def test_a_mix_file_with_data_runs(tmp_path):
    path = write_synthetic_gguf(tmp_path / "v3.gguf", "tiny-deepseek-v3", qtype="UD-IQ1_S")
    llm = LLM.from_gguf(path, progress=False, context_length=64, threads=2)
    logits = llm.model.forward(torch.tensor([1, 2, 3, 4]), llm.model.new_cache(8))
    assert torch.isfinite(logits).all()


def test_synth_cli_writes_a_sparse_r1_split_set(tmp_path, capsys):
    out = tmp_path / "R1-UD-IQ1_S.gguf"
    assert (
        moebox(["synth", "deepseek-r1", str(out), "--qtype", "ud-iq1_s", "--sparse", "--split-gb", "48"]) == 0
    )
    parts = sorted(tmp_path.glob("R1-UD-IQ1_S-*-of-*.gguf"))
    assert len(parts) == 3 and str(parts[0]) in capsys.readouterr().out
    tensors = list(open_gguf(parts[0]))
    assert len(tensors) == 1025
    assert sum(t.n_bytes for t in tensors) == pytest.approx(130.60 * GiB, abs=0.005 * GiB)
    assert sum(disk_bytes(p) for p in parts) < 16 * 2**20


def test_unknown_mix_names_the_known_ones(tmp_path):
    with pytest.raises(MoeboxError, match="UD-Q2_K_XL"):
        write_synthetic_gguf(tmp_path / "x.gguf", "deepseek-r1", qtype="UD-Q9_K_XXL", sparse=True)
    assert set(MIXES) >= set(PUBLISHED)
