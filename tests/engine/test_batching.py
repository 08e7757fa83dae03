"""Many sequences in one forward (engine/scheduler.py, engine/model_runner.py, engine/block_manager.py).

Numerics: the native matmuls and the native MoE give each row bitwise the same result whatever
the number of rows in the call (tests/native: test_matmul_token_blocks_match_single_tokens,
test_moe_batch_matches_single_tokens), and the batch runs each sequence's attention with the
ops a run of it alone uses. Prompts are cut into chunks counted from the prompt's start, so a
sequence's chunks are the same in a batch and alone. A dense model's logits are therefore
bitwise those of the sequence run alone. One exception, stated where it applies: a step of
exactly one decode token may run the one-call CPU decode layer (engine/layers/decode_step.py),
whose MoE router softmax differs from torch's by a few ulp (< 1e-4 on the logits,
tests/engine/test_decode_step.py); a batch never takes that path. At the AMX level, the tile
kernels of K-quants sum multi-row matmuls in another order than the one-row kernel
(tests/native/test_amx.py), so their rows are not bitwise independent of the row count there:
these tests run at the level below (their Q4_1/Q8_0 weights have no AMX kernel anyway).
"""

from __future__ import annotations

import pytest
import torch

from engine.default_model import embedded_model_path
from engine.kv_cache import ForwardBatch
from engine.llm import LLM
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler
from engine.tools.synth import write_synthetic_gguf

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


@pytest.fixture(autouse=True)
def below_amx():
    import moebox_native

    before = moebox_native.isa()
    if before == "amx":
        moebox_native.set_isa("avx512")
    yield
    moebox_native.set_isa(before)


@pytest.fixture(scope="module")
def llm():
    return LLM.from_gguf(embedded_model_path(), context_length=1024, progress=False)


def recording(seq):
    """Keep the logits each sampling of seq saw."""
    seq.logits = []
    sample = seq.sampler.sample

    def record(logits):
        seq.logits.append(logits.clone())
        return sample(logits)

    seq.sampler.sample = record
    return seq


def run_alone(llm, prompt, params=GREEDY, chunk=16):
    sched = Scheduler(llm, max_running=1, prefill_chunk=chunk)
    seq = recording(llm.new_sequence(prompt, params))
    sched.add(seq)
    while not seq.finished:
        sched.step()
    return seq


def mixed_prompts(llm) -> list[list[int]]:
    chats = [
        llm.encode_prompt([{"role": "user", "content": c}])
        for c in ("Hi.", "Write a long poem about the sea, the wind and the ships that sail.", "What is 2+2?")
    ]
    raw = [list(range(100, 100 + n)) for n in (1, 5, 17, 70)]
    return chats + raw


def test_batched_logits_equal_each_sequence_alone(llm):
    prompts = mixed_prompts(llm)
    alone = [run_alone(llm, p) for p in prompts]
    sched = Scheduler(llm, max_running=len(prompts), prefill_chunk=16, step_tokens=48)
    seqs = [recording(llm.new_sequence(p, GREEDY)) for p in prompts]
    for s in seqs:
        sched.add(s)
    sizes = []
    while not all(s.finished for s in seqs):
        sched.step()
        sizes.append(sched._last_step_tokens)
    assert max(sizes) > 16, "no step batched several sequences"
    for a, b in zip(alone, seqs, strict=True):
        assert b.output_ids == a.output_ids
        assert all(torch.equal(x, y) for x, y in zip(a.logits, b.logits, strict=True))
    s = sched.block_manager.stats()
    assert s.used == 0 and s.free + s.cached == s.total


@pytest.fixture(scope="module")
def synth_models(tmp_path_factory):
    made = {}

    def get(shape):
        if shape not in made:
            path = write_synthetic_gguf(tmp_path_factory.mktemp("m") / f"{shape}.gguf", shape, qtype="Q8_0")
            made[shape] = LLM.from_gguf(path, context_length=256, progress=False)
        return made[shape]

    return get


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-qwen3moe", "tiny-deepseek-v3"])
def test_forward_batch_rows_equal_single_sequence_forwards(synth_models, shape):
    """Two decode tokens and a prompt chunk in one forward: each sequence's logits against its
    own forward with the same tokens (MoE: one native call for the routed experts of all rows)."""
    llm = synth_models(shape)
    model = llm.model
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, llm.config.vocab_size, (n,), generator=g) for n in (7, 12, 5)]
    new = [torch.randint(0, llm.config.vocab_size, (n,), generator=g) for n in (1, 6, 1)]
    batched_caches, alone_caches = [], []
    for p in prompts:
        for caches in (batched_caches, alone_caches):
            c = model.new_cache(64)
            model.forward(p, c)
            caches.append(c)
    ids = torch.cat(new)
    batch = ForwardBatch([(c, len(t)) for c, t in zip(batched_caches, new, strict=True)])
    got = model.forward_batch(ids, batch, None)
    want = torch.cat([model.forward(t, c, all_logits=True) for t, c in zip(new, alone_caches, strict=True)])
    assert [c.length for c in batched_caches] == [c.length for c in alone_caches]
    if shape == "tiny-qwen3moe":
        # the alone single-token forwards run the one-call decode layer (router softmax: a few ulp)
        assert (got - want).abs().max() < 1e-4
    else:
        assert torch.equal(got, want), (got - want).abs().max()


def test_cancel_mid_prefill_and_mid_decode_frees_every_block(llm):
    sched = Scheduler(llm, max_running=4, prefill_chunk=16)
    total = sched.block_manager.stats().total
    long_prompt = list(range(200, 300))
    a = llm.new_sequence(long_prompt, SamplingParams(temperature=0, max_tokens=50))
    b = llm.new_sequence(list(range(300, 320)), SamplingParams(temperature=0, max_tokens=50, ignore_eos=True))
    sched.add(b)
    while not b.output_ids:
        sched.step()
    sched.add(a)
    sched.step()
    assert 0 < a.num_computed < len(long_prompt)  # mid-prefill
    assert sched.abort(a).finish_reason == "cancelled"
    sched.step()
    assert b.output_ids and not b.finished  # mid-decode
    assert sched.abort(b).finish_reason == "cancelled"
    s = sched.block_manager.stats()
    assert s.used == 0 and s.free + s.cached == total
    assert a.cache is None and b.cache is None and not sched.running and not sched.waiting
    # what stays cached is only full blocks of computed tokens, and the pool can give it back
    assert s.cached <= (a.hashed_blocks + b.hashed_blocks)
    big = llm.new_sequence(list(range(5, 5 + llm.context_length - 1)), SamplingParams(max_tokens=1))
    assert sched.block_manager.allocate(big)
    sched.block_manager.release(big)


def test_prefix_hits_are_counted_and_give_the_uncached_result(llm):
    """A second prompt that starts with the first one's full blocks copies their entries. With
    the same chunk boundaries as a run without the cache, its logits are bitwise the same."""
    system = llm.encode_prompt(
        [
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "Name a colour."},
        ]
    )
    first = system
    second = system + llm.tokenizer.encode(" Blue. And a fruit?", add_special=False)
    sched = Scheduler(llm, max_running=2, prefill_chunk=16)
    a = recording(llm.new_sequence(first, GREEDY))
    sched.add(a)
    while not a.finished:
        sched.step()
    b = recording(llm.new_sequence(second, GREEDY))
    sched.add(b)
    chunks = []
    while not b.finished:
        chunks += [c for s, c in sched.step() if s is b]
    hit = (len(first) + GREEDY.max_tokens - 1) // 16 * 16  # a's computed full blocks
    hit = min(hit, (len(second) - 1) // 16 * 16)
    # the tokens of a's output are not in b's prompt: only blocks inside the shared prompt count
    shared = min(hit, len(first) // 16 * 16)
    assert b.cached_tokens == shared > 0
    assert chunks[-1].cached_tokens == shared
    stats = sched._make_stats()
    assert stats.cached_prompt_tokens == shared and stats.prompt_tokens == len(first) + len(second)
    alone = run_alone(llm, second)
    assert b.output_ids == alone.output_ids
    assert all(torch.equal(x, y) for x, y in zip(alone.logits, b.logits, strict=True))


def test_a_pool_too_small_ends_requests_with_length(llm, caplog):
    sched = Scheduler(llm, max_running=3, prefill_chunk=16, kv_tokens=160)
    params = SamplingParams(temperature=0, max_tokens=300, ignore_eos=True)
    seqs = [llm.new_sequence(list(range(400 + 30 * i, 430 + 30 * i)), params) for i in range(3)]
    for s in seqs:
        sched.add(s)
    last = {}
    with caplog.at_level("WARNING", logger="moebox.scheduler"):
        while not all(s.finished for s in seqs):
            for s, c in sched.step():
                if c.finish_reason:
                    last[s.id] = c
    assert all(last[s.id].finish_reason == "length" for s in seqs)
    assert all(len(s.output_ids) < 300 for s in seqs)
    assert "KV cache pool is full" in caplog.text
    assert sched._make_stats().out_of_kv >= 1
    assert sched.block_manager.stats().used == 0


def test_a_request_that_does_not_fit_waits(llm):
    sched = Scheduler(llm, max_running=4, prefill_chunk=64, kv_tokens=160)
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    a = llm.new_sequence(list(range(500, 590)), params)
    b = llm.new_sequence(list(range(600, 690)), params)
    sched.add(a)
    sched.add(b)
    sched.step()
    assert a in sched.running and list(sched.waiting) == [b]  # 2 x 91 tokens > 160
    while not a.finished:
        sched.step()
        assert b.num_computed == 0 or a.finished
    while not b.finished:
        sched.step()
    assert len(a.output_ids) == len(b.output_ids) == 4


def test_decoding_streams_get_a_token_every_step_while_a_long_prompt_prefills(llm):
    sched = Scheduler(llm, max_running=3, prefill_chunk=16)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    streams = [llm.new_sequence(list(range(700 + 10 * i, 710 + 10 * i)), params) for i in range(2)]
    for s in streams:
        sched.add(s)
    while not all(s.output_ids for s in streams):
        sched.step()
    long = llm.new_sequence(list(range(10, 170)), params)
    sched.add(long)
    while not long.output_ids:
        before = [len(s.output_ids) for s in streams]
        sched.step()
        assert [len(s.output_ids) for s in streams] == [n + 1 for n in before]
        assert sched._last_step_tokens <= 16 + len(streams)


def test_a_prompt_larger_than_the_pool_is_refused(llm):
    from engine.errors import ContextLengthError

    sched = Scheduler(llm, max_running=2, kv_tokens=64)
    with pytest.raises(ContextLengthError, match="KV cache holds 64"):
        sched.add(llm.new_sequence(list(range(100, 180)), GREEDY))
    seq = llm.new_sequence(
        list(range(100, 150)), SamplingParams(temperature=0, max_tokens=100, ignore_eos=True)
    )
    sched.add(seq)
    while not seq.finished:
        sched.step()
    assert seq.finish_reason == "length" and seq.num_tokens == 64
