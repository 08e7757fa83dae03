"""How one request wants its tokens chosen and when it stops."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    """Sampling and stopping for one request. temperature 0 means greedy."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False


# What a request that names no sampling gets when the GGUF recommends nothing: llama-server's defaults.
LLAMA_SERVER_SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}

# The GGUF keys (gguf-py's Keys.General.Sampling) with which a file recommends its own sampling.
GGUF_SAMPLING_KEYS = {
    "temperature": "general.sampling.temp",
    "top_k": "general.sampling.top_k",
    "top_p": "general.sampling.top_p",
    "min_p": "general.sampling.min_p",
    "repetition_penalty": "general.sampling.penalty_repeat",
}

SAMPLING_KNOBS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def default_sampling(metadata: Mapping[str, Any], **overrides: float | None) -> dict[str, float]:
    """The sampling a request gets for what it does not name: the given overrides (server flags)
    over the file's recommended values over llama-server's defaults."""
    values: dict[str, float] = dict(LLAMA_SERVER_SAMPLING)
    for name, key in GGUF_SAMPLING_KEYS.items():
        if metadata.get(key) is not None:
            values[name] = metadata[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["top_k"] = int(values["top_k"])
    return values


def sampling_with_defaults(defaults: Mapping[str, float], **request: Any) -> SamplingParams:
    """SamplingParams for one request: every knob the request leaves None takes the default."""
    knobs = {k: request.pop(k) for k in SAMPLING_KNOBS if k in request}
    chosen = {k: defaults[k] for k in SAMPLING_KNOBS if k in defaults}
    chosen.update({k: v for k, v in knobs.items() if v is not None})
    return SamplingParams(**chosen, **request)
