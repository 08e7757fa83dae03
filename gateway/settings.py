"""What a gateway instance is configured with (the `moebox serve` flags)."""

from __future__ import annotations

from typing import Literal

import msgspec


class GatewaySettings(msgspec.Struct, kw_only=True, frozen=True):
    model_name: str | None = None  # name shown by /v1/models (default: the GGUF's)
    api_key: str | None = None  # when set, every route but /health wants `Authorization: Bearer KEY`
    reasoning_format: Literal["deepseek", "none"] = "deepseek"  # "none": <think> stays in content
    cors_origins: tuple[str, ...] = ()  # e.g. ("http://localhost:3000",) or ("*",)
    max_body_bytes: int = 8 * 1024 * 1024  # larger bodies get 413
    keepalive_seconds: float = 5.0  # SSE comment while a long prefill runs
    max_tokens_limit: int | None = None  # cap on generated tokens per request (default: the context)
    n_predict: int = 4096  # generated tokens at most for a request that sets no max_tokens
    # server-wide sampling for what a request does not name (None: the GGUF's recommendation,
    # else llama-server's defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05)
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    max_running: int = 32  # sequences generated at once, batched per step (--parallel)
    max_waiting: int = 64  # queued requests beyond that get 429
    prefill_chunk: int = 256  # prompt tokens per request and step, so running streams keep their pace
