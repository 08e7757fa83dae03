"""Sampler rules, stop-string matching and placement rules."""

from __future__ import annotations

import pytest
import torch

from engine.errors import MoeboxError
from engine.placement import Placement, PlacementRule
from engine.sampler import Sampler
from engine.sampling_params import SamplingParams
from engine.sequence import StopStringMatcher


def logits(seed: int = 0, n: int = 100) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 3


def draws(params: SamplingParams, n: int = 200, seed: int = 0) -> list[int]:
    s = Sampler(params, 100)
    x = logits(seed)
    return [s.sample(x) for _ in range(n)]


def test_greedy_and_cuts_that_leave_one_token_pick_the_argmax():
    best = int(logits().argmax())
    assert set(draws(SamplingParams(temperature=0))) == {best}
    assert set(draws(SamplingParams(temperature=1.0, top_k=1, seed=1))) == {best}
    assert set(draws(SamplingParams(temperature=1.0, top_p=1e-6, seed=1))) == {best}
    assert set(draws(SamplingParams(temperature=1.0, min_p=1.0, seed=1))) == {best}


def test_top_k_and_top_p_restrict_the_support():
    x = logits()
    top5 = set(x.topk(5).indices.tolist())
    assert set(draws(SamplingParams(temperature=2.0, top_k=5, seed=3), 400)) <= top5
    probs = torch.softmax(x, -1)
    order = probs.argsort(descending=True)
    mass = probs[order].cumsum(0)
    nucleus = set(order[: int((mass < 0.8).sum()) + 1].tolist())
    assert set(draws(SamplingParams(temperature=1.0, top_p=0.8, seed=4), 400)) <= nucleus


def test_seed_reproduces_and_temperature_spreads():
    p = SamplingParams(temperature=1.5, seed=11)
    assert draws(p) == draws(p)
    assert len(set(draws(p))) > 5


def test_penalties():
    x = torch.tensor([2.0, -2.0, 1.0, 0.5])
    s = Sampler(SamplingParams(repetition_penalty=2.0), 4)
    s.observe_prompt([0, 1])
    assert s.apply_penalties(x).tolist() == [1.0, -4.0, 1.0, 0.5]
    s = Sampler(SamplingParams(presence_penalty=0.5, frequency_penalty=0.25), 4)
    s.observe_prompt([3])  # prompt tokens do not count for presence/frequency
    for t in (2, 2, 1):
        s.observe_output(t)
    assert s.apply_penalties(x).tolist() == pytest.approx([2.0, -2.75, 0.0, 0.5])


def test_stop_string_split_over_feeds_is_held_back_and_cut():
    m = StopStringMatcher(("</answer>", "STOP"))
    assert m.feed("The result is 4") == ("The result is 4", False)
    assert m.feed(" </ans") == (" ", False)  # "</ans" could start a stop string
    assert m.feed("wer> and more") == ("", True)
    m = StopStringMatcher(("STOP",))
    assert m.feed("ST") == ("", False)
    assert m.feed("AY") == ("STAY", False)
    assert m.flush() == ""


def test_placement_rules_first_match_wins_and_are_validated():
    p = Placement(
        [PlacementRule(r"_exps\.weight$", "cpu", "native"), PlacementRule(r".", "cuda", "bf16")], "cuda"
    )
    assert p.resolve("blk.3.ffn_up_exps.weight") == ("cpu", "native")
    assert p.resolve("blk.3.attn_q_a.weight") == ("cuda", "bf16")
    with pytest.raises(MoeboxError, match="unknown format"):
        PlacementRule(".", "cpu", "int3")
    with pytest.raises(MoeboxError, match="native weights live on the CPU"):
        PlacementRule(".", "cuda", "native")
    with pytest.raises(MoeboxError, match="not a valid regex"):
        PlacementRule("(", "cpu", "f32")


def test_draws_follow_the_distribution():
    """20,000 seeded draws over 8 tokens: each frequency within 5 standard deviations of its
    probability (a wrong mapping from the uniform number to a token moves whole percents)."""
    probs = torch.tensor([0.4, 0.0, 0.25, 0.15, 0.1, 0.06, 0.04, 0.0])
    s = Sampler(SamplingParams(seed=5), 8)
    n = 20_000
    counts = torch.bincount(torch.tensor([s._draw(probs) for _ in range(n)]), minlength=8).double()
    sigma = (n * probs.double() * (1 - probs.double())).sqrt()
    assert counts[1] == 0 and counts[7] == 0
    assert torch.all((counts - n * probs.double()).abs() <= 5 * sigma + 1e-9)


@pytest.mark.parametrize("top_p", [0.0, 0.3, 0.9, 0.999, 0.99999])
def test_nucleus_is_what_sorting_the_whole_vocabulary_keeps(top_p):
    from engine.sampler import nucleus

    probs = torch.softmax(torch.randn(5000, generator=torch.Generator().manual_seed(2)) * 2, dim=-1)
    ids, kept = nucleus(probs, top_p)
    sorted_probs, order = torch.sort(probs, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    n = max(1, int((before < top_p).sum()))
    assert torch.equal(ids, order[:n]) and torch.equal(kept, sorted_probs[:n])
