"""Sampling parameters at the edges of what the API accepts never crash the sampler.

Found by schemathesis against the HTTP API: top_p = 0, a temperature that rounds
to 0 in float32, and a repetition penalty near 0 made torch.multinomial fail.
At those edges the sampler must behave like greedy decoding.
"""

from __future__ import annotations

import pytest
import torch

from engine.sampler import Sampler
from engine.sampling_params import SamplingParams


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(top_p=0.0),
        SamplingParams(top_p=1e-300),
        SamplingParams(temperature=1e-300),
        SamplingParams(temperature=1e-40),
        SamplingParams(temperature=0.7, top_p=1e-9, top_k=1, min_p=1.0),
    ],
)
def test_extremes_pick_the_most_likely_token(params):
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(5000, generator=gen) * 5
        sampler = Sampler(params, 5000)
        assert sampler.sample(logits) == int(torch.argmax(logits))


def test_a_near_zero_repetition_penalty_boosts_seen_tokens_without_overflowing():
    logits = torch.tensor([3.0, 1.0, 2.0, -1.0])
    sampler = Sampler(SamplingParams(repetition_penalty=1e-300, temperature=0.7, seed=0), 4)
    sampler.observe_prompt([2])  # a positive logit divided by ~0: +inf before the guard
    assert sampler.sample(logits) == 2
