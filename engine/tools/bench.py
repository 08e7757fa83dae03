"""`moebox bench model`: prefill and decode speed, side by side with llama.cpp on the same file.

Both run the same work: a prompt of random token ids in one batch (prefill), then
single-token greedy steps (decode), one sequence, the same number of threads. The
two alternate run by run, so a machine whose load drifts treats both alike.

For an MoE model each prompt row also says how the prompt was routed (the fewest
experts any MoE layer used, and the busiest expert's load over the mean): a file whose
router sends every token to the same few experts flatters prefill and batching figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from engine.llm import LLM
from engine.tools.routing import random_prompt, routing_stats, routing_summary


@dataclass
class Speed:
    prefill: float  # tok/s
    decode: float  # tok/s

    def best(self, other: Speed) -> Speed:
        return Speed(max(self.prefill, other.prefill), max(self.decode, other.decode))


class MoeboxRunner:
    def __init__(self, llm: LLM):
        self.model = llm.model

    def run(self, ids: list[int], gen_tokens: int) -> Speed:
        cache = self.model.new_cache(len(ids) + gen_tokens + 1)
        t0 = time.perf_counter()
        token = int(self.model.forward(torch.tensor(ids), cache)[-1].argmax())
        t1 = time.perf_counter()
        for _ in range(gen_tokens):
            token = int(self.model.forward(torch.tensor([token]), cache)[-1].argmax())
        t2 = time.perf_counter()
        return Speed(len(ids) / (t1 - t0), gen_tokens / (t2 - t1))


_GGML_CACHE_TYPES = {"f32": 0, "f16": 1, "bf16": 30}  # ggml_type values


class LlamaCppRunner:
    """The same measurement through llama-cpp-python."""

    def __init__(self, path: str, n_ctx: int, threads: int, kv_cache_dtype: str = "f16"):
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.lc = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            # the same cache format as ours, so both do the same work
            type_k=_GGML_CACHE_TYPES[kv_cache_dtype],
            type_v=_GGML_CACHE_TYPES[kv_cache_dtype],
            verbose=False,
        )
        self.n_vocab = self.lc.n_vocab()

    def _last_argmax(self) -> int:
        logits = self.llama_cpp.llama_get_logits_ith(self.lc._ctx.ctx, -1)
        return int(np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).argmax())

    def run(self, ids: list[int], gen_tokens: int) -> Speed:
        self.lc.reset()
        t0 = time.perf_counter()
        self.lc.eval(ids)
        t1 = time.perf_counter()
        token = self._last_argmax()
        for _ in range(gen_tokens):
            self.lc.eval([token])
            token = self._last_argmax()
        t2 = time.perf_counter()
        return Speed(len(ids) / (t1 - t0), gen_tokens / (t2 - t1))

    def close(self) -> None:
        self.lc.close()


def run_bench(
    path: str,
    *,
    prompt_tokens: list[int],
    gen_tokens: int,
    threads: int | None,
    repeat: int,
    llama_cpp: bool,
    kv_cache_dtype: str = "auto",
    placement: list | tuple = (),
) -> None:
    """placement: our rules (-ot, --cpu-moe, --n-cpu-moe); llama.cpp runs with its defaults."""
    n_ctx = max(prompt_tokens) + gen_tokens + 8
    llm = LLM.from_gguf(
        path,
        threads=threads,
        context_length=n_ctx,
        progress=True,
        kv_cache_dtype=kv_cache_dtype,
        placement=placement,
    )
    ours = MoeboxRunner(llm)
    ref = None
    if llama_cpp:
        try:
            ref = LlamaCppRunner(path, n_ctx, llm.threads, llm.kv_cache_dtype)
        except ImportError:
            print("llama-cpp-python is not installed: moebox figures only")
    ours.run(random_prompt(8, llm.config.vocab_size), 2)  # warm-up
    print(
        f"model {llm.model_name} ({llm.config.variant}), {llm.threads} threads, "
        f"KV cache {llm.kv_cache_dtype}, best of {repeat}"
    )
    header = f"{'test':<12}{'moebox tok/s':>14}{'llama.cpp tok/s':>17}{'ratio':>8}  routing of the prompt"
    print(header)
    print("-" * len(header))
    for n in prompt_tokens:
        ids = random_prompt(n, llm.config.vocab_size)
        a, b = Speed(0, 0), Speed(0, 0)
        for _ in range(repeat):
            a = a.best(ours.run(ids, gen_tokens))
            if ref is not None:
                b = b.best(ref.run(ids, gen_tokens))
        routing = routing_summary(routing_stats(llm, n_tokens=n))  # the same ids as the runs
        for name, x, y, note in (
            (f"pp{n}", a.prefill, b.prefill, routing),
            (f"tg{gen_tokens}@{n}", a.decode, b.decode, ""),
        ):
            cmp = f"{y:>17.1f}{x / y:>8.2f}" if y else f"{'-':>17}{'-':>8}"
            print(f"{name:<12}{x:>14.1f}{cmp}  {note}".rstrip(), flush=True)
    if ref is not None:
        ref.close()
