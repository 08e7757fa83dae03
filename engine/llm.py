"""The generation API: load a GGUF model, turn prompts into tokens, generate.

    llm = LLM.from_gguf("model.gguf")
    for chunk in llm.generate([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=64)):
        print(chunk.text, end="", flush=True)

Several requests at once run through engine.scheduler.Scheduler: each step is one forward for
every live request (engine/model_runner.py).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from engine.errors import ContextLengthError, EmptyPromptError, InvalidTokenError, PromptError
from engine.outputs import GenerationChunk
from engine.sampling_params import SamplingParams, default_sampling, sampling_with_defaults
from engine.sequence import Sequence

log = logging.getLogger("moebox.llm")

Prompt = str | list[dict] | list[int]


class LLM:
    """A loaded model with its tokenizer and chat template.

    Public attributes: `config` (engine.config.ModelConfig), `tokenizer`
    (engine.tokenizer.Tokenizer), `chat_template` (engine.chat_template.ChatTemplate),
    `context_length` (int: tokens a sequence may hold, prompt + output),
    `model_name` (str), `eos_token_ids` (tuple[int, ...]), `kv_cache_dtype` (str: "f16",
    "bf16" or "f32", what the KV cache stores), `sampling_defaults` (dict: temperature, top_k,
    top_p, min_p, ... for what a request does not name).
    """

    def __init__(self, gguf, config, model, tokenizer, chat_template, context_length: int, threads: int):
        self.gguf = gguf
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.context_length = context_length
        self.threads = threads
        self.model_name = config.name or Path(gguf.path).stem
        self.eos_token_ids: tuple[int, ...] = tuple(sorted(tokenizer.eos_ids))
        # what a request that names no sampling gets: the file's recommendation, else llama-server's
        self.sampling_defaults: dict[str, float] = default_sampling(gguf.metadata)
        self._seq_ids = itertools.count(1)

    @classmethod
    def from_gguf(
        cls,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        context_length: int | None = None,
        progress: bool = True,
        kv_cache_dtype: str = "auto",
        placement: list | tuple = (),
    ) -> LLM:
        """Open a GGUF file, split set or directory and load the model.

        threads: CPU threads for torch and the native kernels (default: physical cores).
        context_length: tokens per sequence (default and maximum: the model's own).
        progress: show a progress bar while loading.
        kv_cache_dtype: how keys/values are stored: "f16", "bf16", "f32" or "auto" (f16 on a
        GPU, as llama.cpp; f32 in RAM, see engine/kv_cache.py).
        placement: the user's placement rules (engine.placement.user_rules of -ot, --cpu-moe,
        --n-cpu-moe), before the preset; without any, routed experts go to the GPU as far as they
        fit (engine/plan.py). Raises InvalidOptionError for a rule that cannot run and
        InsufficientMemoryError when the plan does not fit the GPU, naming what to change.
        Raises GGUFError / UnsupportedModelError / TokenizerError with a message that says what to do.
        """
        from engine.chat_template import ChatTemplate
        from engine.config import model_config
        from engine.gguf_file import open_gguf
        from engine.kv_cache import KV_CACHE_DTYPES, cache_bytes_per_token, resolve_cache_dtype
        from engine.models import load_model
        from engine.native import set_threads
        from engine.plan import machine_memory, plan_memory
        from engine.tokenizer import Tokenizer

        started = time.perf_counter()
        resolve_cache_dtype(kv_cache_dtype, "cpu")  # an unknown name fails before anything loads
        threads = threads or _physical_cores()
        set_threads(threads)
        gguf = open_gguf(path)
        config = model_config(gguf)
        plan = plan_memory(
            gguf,
            config,
            rules=placement,
            memory=machine_memory(),
            context=context_length,
            kv_cache_dtype=kv_cache_dtype,
        )
        for line in filter(None, plan.table()):  # as `moebox inspect MODEL --plan` prints it
            log.info("%s", line)
        plan.raise_if_unfit()
        ctx = plan.context
        tokenizer = Tokenizer.from_gguf_metadata(gguf.metadata)
        chat_template = ChatTemplate.from_gguf_metadata(gguf.metadata)
        placement = plan.placement
        kv_cache_dtype = plan.kv_dtype
        dtype = KV_CACHE_DTYPES[kv_cache_dtype]
        model = load_model(gguf, config, placement, progress=progress, kv_cache_dtype=dtype)
        if placement.compute_device == "cuda":
            import torch

            log.info(
                "allocated on the GPU after loading: %.2f GiB (planned: %.2f GiB of weights)",
                torch.cuda.memory_allocated() / 2**30,
                plan.weight_bytes("cuda") / 2**30,
            )
        per_token = cache_bytes_per_token(config, dtype)
        log.info(
            "KV cache: %s on %s, %.1f KiB per token, %.1f MiB per sequence at the full context of %d tokens",
            kv_cache_dtype,
            placement.compute_device,
            per_token / 2**10,
            per_token * ctx / 2**20,
            ctx,
        )
        log.info(
            "loaded %s (%s, %d layers) in %.1f s, context %d, %d threads; %s",
            config.name,
            config.variant,
            config.n_layers,
            time.perf_counter() - started,
            ctx,
            threads,
            _resident_memory(),
        )
        llm = cls(gguf, config, model, tokenizer, chat_template, ctx, threads)
        llm.memory_plan = plan  # engine.plan.MemoryPlan: where each tensor went and why
        return llm

    @property
    def kv_cache_dtype(self) -> str:
        from engine.kv_cache import KV_CACHE_DTYPES

        return next(name for name, dtype in KV_CACHE_DTYPES.items() if dtype == self.model.cache_dtype)

    # --- prompts -------------------------------------------------------------------------

    def encode_prompt(self, prompt: Prompt, *, force_think: bool = False) -> list[int]:
        """Token ids for a prompt: text (encoded as is), chat messages (rendered with the
        chat template and a generation prompt; force_think opens the reasoning block)
        or token ids (checked against the vocabulary)."""
        if not prompt:
            raise EmptyPromptError("the prompt is empty; send some text, a message or token ids.")
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        elif prompt and all(isinstance(m, dict) for m in prompt):
            ids, _ = self.encode_chat(prompt, force_think=force_think)
        else:
            ids = [int(t) for t in prompt]
        return ids

    def encode_chat(
        self,
        messages: list[dict],
        *,
        force_think: bool = False,
        tools: list[dict] | None = None,
        force_tool: bool | str = False,
    ) -> tuple[list[int], str]:
        """The one way chat messages become token ids: the chat template (with the generation
        prompt; force_think opens the reasoning block), encoded with a single BOS.
        tools: OpenAI-style tool definitions; force_tool (True or a tool's name) ends the prompt
        with the opening of a tool call (see ChatTemplate.render). Returns (ids, rendered text)."""
        text = self.chat_template.render(
            messages, add_generation_prompt=True, force_think=force_think, tools=tools, force_tool=force_tool
        )
        # Templates usually write the BOS text themselves; add it only where they did not.
        ids = self.tokenizer.encode(text, add_special=False)
        bos = self.tokenizer.bos_id
        if self.tokenizer.add_bos and bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return ids, text

    def check_prompt(self, prompt_ids: list[int], params: SamplingParams | None = None) -> None:
        """Raise a PromptError subclass for an empty, too long or out-of-vocabulary prompt."""
        if not prompt_ids:
            raise EmptyPromptError("the prompt is empty; send at least one token of text.")
        vocab = self.config.vocab_size
        bad = [t for t in prompt_ids if not 0 <= t < vocab]
        if bad:
            raise InvalidTokenError(
                f"prompt token id {bad[0]} is outside the vocabulary (0..{vocab - 1}); "
                "send ids produced by this model's tokenizer."
            )
        if len(prompt_ids) >= self.context_length:
            raise ContextLengthError(
                f"the prompt has {len(prompt_ids)} tokens but the context holds {self.context_length} "
                "(one more is needed to generate); shorten the prompt."
            )

    # --- generation ----------------------------------------------------------------------

    def new_sequence(self, prompt_ids: list[int], params: SamplingParams) -> Sequence:
        """A sequence's state, to hand to a Scheduler (`add` or `submit`). Raises a PromptError
        subclass for a prompt that cannot run."""
        self.check_prompt(prompt_ids, params)
        return Sequence(
            next(self._seq_ids),
            prompt_ids,
            params,
            vocab_size=self.config.vocab_size,
            detokenizer=self.new_detokenizer(prompt_ids),
            eos_token_ids=self.eos_token_ids,
            context_length=self.context_length,
        )

    def generate(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        *,
        force_think: bool = False,
        scheduler=None,
    ) -> Iterator[GenerationChunk]:
        """Generate for one prompt, yielding chunks as tokens are produced; the last one
        has finish_reason and timings set. Closing the iterator early frees the KV cache.
        scheduler: an engine.scheduler.Scheduler to run on, whose prefix cache then serves the
        next call too (a chat's earlier turns); default: one of its own for this call, with the
        prompt in one forward."""
        from engine.scheduler import Scheduler, StepError

        params = params or sampling_with_defaults(self.sampling_defaults)
        seq = self.new_sequence(self.encode_prompt(prompt, force_think=force_think), params)
        scheduler = scheduler or Scheduler(self, max_running=1, prefill_chunk=0)
        scheduler.add(seq)
        try:
            while not seq.finished:
                try:
                    outputs = scheduler.step()
                except StepError as err:
                    raise err.error from err.__cause__
                for _, chunk in outputs:
                    if chunk.token_ids or chunk.text or chunk.finish_reason:
                        yield chunk
        finally:
            if not seq.finished:
                scheduler.abort(seq)

    def new_detokenizer(self, prompt_ids: list[int]):
        """An incremental detokenizer for one sequence (`add(id) -> str`, `flush() -> str`)."""
        from engine.detokenizer import IncrementalDetokenizer

        return IncrementalDetokenizer(self.tokenizer)

    def close(self) -> None:
        """Release the model and unmap the file."""
        self.model = None
        self.gguf.close()


def _resident_memory() -> str:
    """What the process holds in RAM now: its own allocations, and the pages of the mapped
    GGUF file read so far (the rest of the mapping is read on demand and stays in the page
    cache); with a GPU, what torch allocated there."""
    import psutil
    import torch

    mem = psutil.Process().memory_info()
    shared = getattr(mem, "shared", 0)  # file-backed resident pages (Linux)
    text = f"RAM {(mem.rss - shared) / 2**20:,.0f} MiB allocated + {shared / 2**20:,.0f} MiB of mapped file pages"
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        text += f"; GPU {torch.cuda.memory_allocated() / 2**20:,.0f} MiB allocated"
    return text


def _physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


__all__ = ["LLM", "Prompt", "PromptError", "Sequence"]
