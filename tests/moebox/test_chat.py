"""The terminal chat (moebox/chat.py) on the embedded SmolLM2: turns, history, prefix reuse."""

from __future__ import annotations

import io
import re

from engine.default_model import embedded_model_path
from engine.llm import LLM
from engine.sampling_params import SamplingParams
from moebox.chat import chat


def test_second_turn_reuses_the_first_turns_cache():
    llm = LLM.from_gguf(embedded_model_path(), context_length=1024, progress=False)
    out = io.StringIO()
    system = "You are a terse assistant who answers in a few words. " * 3  # > 2 blocks of 16 tokens
    chat(
        llm,
        params=SamplingParams(temperature=0, max_tokens=8),
        system=system,
        stdin=io.StringIO("Name a colour.\nAnd a fruit?\n"),
        stdout=out,
    )
    cached = [int(n) for n in re.findall(r"prompt tokens \((\d+) cached\)", out.getvalue())]
    assert len(cached) == 2, out.getvalue()
    assert cached[0] == 0 and cached[1] >= 32 and cached[1] % 16 == 0
