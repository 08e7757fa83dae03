"""`moebox bench`: prefill and decode speed, side by side with llama.cpp on the same file.

Both run the same work: a prompt of random token ids in one batch (prefill), then
single-token steps (decode), greedy, one sequence, the same number of threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from engine.llm import LLM


@dataclass
class Speed:
    prefill: float  # tok/s
    decode: float  # tok/s


def _prompt(n: int, vocab: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, min(vocab, 30000), (n,), generator=g).tolist()


def bench_moebox(llm: LLM, prompt_tokens: int, gen_tokens: int, repeat: int) -> Speed:
    model = llm.model
    ids = _prompt(prompt_tokens, llm.config.vocab_size)
    best = Speed(0.0, 0.0)
    model.forward(torch.tensor(ids[:8]), model.new_cache(prompt_tokens + gen_tokens + 1))  # warm-up
    for _ in range(repeat):
        cache = model.new_cache(prompt_tokens + gen_tokens + 1)
        t0 = time.perf_counter()
        logits = model.forward(torch.tensor(ids), cache)
        t1 = time.perf_counter()
        token = int(logits[-1].argmax())
        for _ in range(gen_tokens):
            token = int(model.forward(torch.tensor([token]), cache)[-1].argmax())
        t2 = time.perf_counter()
        best = Speed(max(best.prefill, prompt_tokens / (t1 - t0)), max(best.decode, gen_tokens / (t2 - t1)))
    return best


def bench_llama_cpp(path: str, vocab: int, prompt_tokens: int, gen_tokens: int, repeat: int, threads: int):
    """The same measurement through llama-cpp-python, or None when it is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    lc = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=prompt_tokens + gen_tokens + 8,
        n_batch=max(prompt_tokens, 8),
        n_ubatch=max(prompt_tokens, 8),
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    ids = _prompt(prompt_tokens, vocab)
    n_vocab = lc.n_vocab()

    def last_argmax() -> int:
        logits = llama_cpp.llama_get_logits_ith(lc._ctx.ctx, -1)
        return int(np.ctypeslib.as_array(logits, shape=(n_vocab,)).argmax())

    best = Speed(0.0, 0.0)
    for _ in range(repeat):
        lc.reset()
        t0 = time.perf_counter()
        lc.eval(ids)
        t1 = time.perf_counter()
        token = last_argmax()
        for _ in range(gen_tokens):
            lc.eval([token])
            token = last_argmax()
        t2 = time.perf_counter()
        best = Speed(max(best.prefill, prompt_tokens / (t1 - t0)), max(best.decode, gen_tokens / (t2 - t1)))
    lc.close()
    return best


def run_bench(
    path: str, *, prompt_tokens: list[int], gen_tokens: int, threads: int | None, repeat: int, llama_cpp: bool
) -> None:
    llm = LLM.from_gguf(
        path, threads=threads, context_length=max(prompt_tokens) + gen_tokens + 8, progress=True
    )
    print(f"model {llm.model_name} ({llm.config.variant}), {llm.threads} threads, best of {repeat}")
    header = f"{'test':<12}{'moebox tok/s':>14}{'llama.cpp tok/s':>17}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    rows = []
    for n in prompt_tokens:
        ours = bench_moebox(llm, n, gen_tokens, repeat)
        ref = (
            bench_llama_cpp(path, llm.config.vocab_size, n, gen_tokens, repeat, llm.threads)
            if llama_cpp
            else None
        )
        rows.append((f"pp{n}", ours.prefill, ref.prefill if ref else None))
        rows.append((f"tg{gen_tokens}@{n}", ours.decode, ref.decode if ref else None))
    for name, a, b in rows:
        ref = f"{b:>17.1f}{a / b:>8.2f}" if b else f"{'-':>17}{'-':>8}"
        print(f"{name:<12}{a:>14.1f}{ref}")
