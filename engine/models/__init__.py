"""Model code per architecture; `load_model` picks it from the config."""

from __future__ import annotations

import torch

from engine.errors import UnsupportedModelError
from engine.models.decoder import DecoderModel
from engine.models.weights import Weights
from engine.placement import Placement


def load_model(
    gguf,
    config,
    placement: Placement,
    *,
    progress: bool = True,
    kv_cache_dtype: torch.dtype = torch.float32,
) -> DecoderModel:
    """Build the model of an opened GGUF file with tensors placed as `placement` says;
    its caches store keys/values (or MLA latents) in `kv_cache_dtype`."""
    from engine.models import deepseek2, llama, qwen_moe

    loaders = {
        "llama": llama.load,
        "qwen2": llama.load,
        "qwen2moe": qwen_moe.load,
        "qwen3moe": qwen_moe.load,
        "deepseek2": deepseek2.load,
    }
    try:
        loader = loaders[config.architecture]
    except KeyError:
        raise UnsupportedModelError(
            f"no model code for architecture {config.architecture!r}; supported: {', '.join(loaders)}"
        ) from None
    model = loader(Weights(gguf, placement), config, progress=progress)
    model.cache_dtype = kv_cache_dtype
    return model
