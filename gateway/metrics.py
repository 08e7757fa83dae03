"""Prometheus metrics of one gateway instance, in its own registry (no global state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.outputs import Timings
from engine.scheduler import SchedulerStats

_SPEED_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _SchedulerCollector(Collector):
    """Reads queue depth and KV cache use from the scheduler at scrape time."""

    def __init__(self, stats: Callable[[], SchedulerStats | None]):
        self._stats = stats

    def collect(self):
        s = self._stats()
        blocks = s.kv_blocks_total if s else 0
        values = {
            "moebox_queue_waiting": ("Requests waiting for the model.", s.waiting if s else 0),
            "moebox_requests_running": ("Requests being generated (live sequences).", s.running if s else 0),
            "moebox_kv_cache_bytes": (
                "Bytes held by the KV caches of live sequences.",
                s.kv_cache_bytes if s else 0,
            ),
            "moebox_kv_cache_tokens": (
                "Tokens held in the KV caches of live sequences.",
                s.kv_cache_tokens if s else 0,
            ),
            "moebox_kv_cache_usage_ratio": (
                "KV pool blocks held by running requests / all blocks, 0..1.",
                s.kv_blocks_used / blocks if blocks else 0.0,
            ),
            "moebox_kv_blocks_total": ("KV pool blocks (--ctx-size / block size).", blocks),
            "moebox_kv_blocks_used": (
                "KV pool blocks held by running requests.",
                s.kv_blocks_used if s else 0,
            ),
            "moebox_kv_blocks_cached": (
                "KV pool blocks kept by the prefix cache (given back when the pool needs them).",
                s.kv_blocks_cached if s else 0,
            ),
            "moebox_kv_blocks_free": ("KV pool blocks free.", s.kv_blocks_free if s else 0),
            "moebox_prefix_cache_hit_ratio": (
                "Prompt tokens taken from the prefix cache / prompt tokens admitted, since start.",
                s.cached_prompt_tokens / s.prompt_tokens if s and s.prompt_tokens else 0.0,
            ),
            "moebox_step_tokens_last": (
                "Tokens computed by the last forward step.",
                s.last_step_tokens if s else 0,
            ),
        }
        for name, (doc, value) in values.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "moebox_steps": ("Forward steps run (one per batch of live requests).", s.steps if s else 0),
            "moebox_step_tokens": (
                "Tokens computed by forward steps (divide by steps: tokens per step).",
                s.step_tokens if s else 0,
            ),
            "moebox_prefix_cached_tokens": (
                "Prompt tokens taken from the prefix cache.",
                s.cached_prompt_tokens if s else 0,
            ),
            "moebox_kv_pool_exhausted": (
                "Requests ended with finish_reason length because the KV pool was full.",
                s.out_of_kv if s else 0,
            ),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)


class GatewayMetrics:
    def __init__(self, stats: Callable[[], SchedulerStats | None]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "moebox_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.generations = Counter(
            "moebox_generations",
            "Generation requests by API and how they ended.",
            ["api", "finish_reason"],
            registry=r,
        )
        self.prompt_tokens = Counter("moebox_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.completion_tokens = Counter("moebox_completion_tokens", "Tokens generated.", registry=r)
        self.reasoning_tokens = Counter(
            "moebox_reasoning_tokens", "Generated tokens that were reasoning.", registry=r
        )
        self.prefill_speed = Histogram(
            "moebox_prefill_tokens_per_second",
            "Prefill speed per request.",
            buckets=_SPEED_BUCKETS,
            registry=r,
        )
        self.decode_speed = Histogram(
            "moebox_decode_tokens_per_second", "Decode speed per request.", buckets=_SPEED_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "moebox_time_to_first_token_seconds",
            "From request arrival to the first generated token.",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.loaded = Gauge("moebox_model_loaded", "1 when the model is loaded and serving.", registry=r)
        r.register(_SchedulerCollector(stats))

    def observe_generation(
        self,
        api: str,
        finish_reason: str,
        prompt: int,
        completion: int,
        reasoning: int,
        timings: Timings | None,
    ) -> None:
        self.generations.labels(api, finish_reason).inc()
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)
        self.reasoning_tokens.inc(reasoning)
        if timings is not None:
            if timings.prompt_ms > 0:
                self.prefill_speed.observe(timings.prompt_per_second)
            if timings.predicted_ms > 0 and timings.predicted_n > 0:
                self.decode_speed.observe(timings.predicted_per_second)

    def render(self) -> bytes:
        return generate_latest(self.registry)
