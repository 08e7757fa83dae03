"""What a request that names no sampling gets: server flags, else the GGUF's recommendation,
else llama-server's defaults; and the default cap on generated tokens."""

from __future__ import annotations

from types import SimpleNamespace

from engine.sampling_params import LLAMA_SERVER_SAMPLING, default_sampling, sampling_with_defaults
from gateway.generation import sampling_params
from gateway.settings import GatewaySettings


def test_llama_server_defaults_without_a_recommendation():
    assert default_sampling({}) == {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
    assert default_sampling({}) == LLAMA_SERVER_SAMPLING


def test_the_file_recommendation_then_flags():
    meta = {"general.sampling.temp": 0.6, "general.sampling.top_p": 0.9, "general.sampling.top_k": 20}
    assert default_sampling(meta) == {"temperature": 0.6, "top_k": 20, "top_p": 0.9, "min_p": 0.05}
    assert default_sampling(meta, temperature=0.3, top_k=None)["temperature"] == 0.3
    assert default_sampling(meta, temperature=0.3, top_k=None)["top_k"] == 20


def test_request_values_win_and_none_takes_the_default():
    params = sampling_with_defaults(default_sampling({}), temperature=None, top_p=0.5, max_tokens=9)
    assert (params.temperature, params.top_p, params.top_k, params.min_p, params.max_tokens) == (
        0.8,
        0.5,
        40,
        0.05,
        9,
    )
    assert sampling_with_defaults(default_sampling({}), temperature=0).temperature == 0


def _llm(**recommended):
    return SimpleNamespace(context_length=32768, sampling_defaults=default_sampling(recommended))


def test_gateway_request_without_sampling():
    settings = GatewaySettings()
    p = sampling_params(_llm(), settings, prompt_len=10, max_tokens=None)
    assert (p.temperature, p.top_k, p.top_p, p.min_p) == (0.8, 40, 0.95, 0.05)
    assert p.max_tokens == 4096  # the --n-predict default cap, not the 32K context
    p = sampling_params(_llm(**{"general.sampling.temp": 0.6}), settings, prompt_len=10, max_tokens=None)
    assert p.temperature == 0.6
    flags = GatewaySettings(temperature=0.2, top_k=5, n_predict=100)
    p = sampling_params(_llm(**{"general.sampling.temp": 0.6}), flags, prompt_len=10, max_tokens=None)
    assert (p.temperature, p.top_k, p.max_tokens) == (0.2, 5, 100)
    p = sampling_params(_llm(), flags, prompt_len=10, max_tokens=9000, temperature=1.1)
    assert (p.temperature, p.max_tokens) == (1.1, 9000)  # a request may ask past the default cap
    p = sampling_params(_llm(), GatewaySettings(max_tokens_limit=50), prompt_len=10, max_tokens=9000)
    assert p.max_tokens == 50
    p = sampling_params(_llm(), settings, prompt_len=32760, max_tokens=None)
    assert p.max_tokens == 8  # what the context has room for
