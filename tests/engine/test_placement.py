"""Placement rules as the user gives them (llama.cpp's -ot, --cpu-moe, --n-cpu-moe) and the
preset they go before; each error a user can hit names the rule and what to write instead."""

from __future__ import annotations

import pytest

from engine.errors import InvalidOptionError, MoeboxError
from engine.placement import (
    EXPS_REGEX,
    Placement,
    PlacementRule,
    check_user_rules,
    n_cpu_moe_rules,
    override_tensor_rules,
    user_rules,
)

R1_NAMES = [
    "token_embd.weight",
    "blk.0.attn_norm.weight",
    "blk.0.attn_q_a.weight",
    "blk.0.attn_k_b.weight",
    "blk.0.ffn_gate.weight",
    "blk.3.ffn_gate_inp.weight",
    "blk.3.exp_probs_b.bias",
    "blk.3.ffn_up_exps.weight",
    "blk.3.ffn_up_shexp.weight",
    "blk.60.ffn_down_exps.weight",
    "output.weight",
]


def test_override_tensor_rules_in_order_with_device_aliases():
    # one flag may carry a comma-separated list; each part splits at its first '='
    rules = override_tensor_rules(r"exps=CPU,blk\.(5[0-9]|60)\.=CUDA0,attn=cuda,ffn=Gpu,x=cpu")
    assert [(r.pattern, r.device, r.format) for r in rules] == [
        ("exps", "cpu", "native"),
        (r"blk\.(5[0-9]|60)\.", "cuda", "gguf"),
        ("attn", "cuda", "gguf"),
        ("ffn", "cuda", "gguf"),
        ("x", "cpu", "native"),
    ]
    assert rules[0].source == "-ot 'exps=CPU'"


@pytest.mark.parametrize(
    "value,words",
    [
        ("exps", ["'exps'", "REGEX=DEVICE"]),  # no '='
        ("exps=CPU,attn", ["'attn'", "REGEX=DEVICE"]),  # the bad part of a list is named
        ("(exps=CPU", ["'(exps=CPU'", "not a valid regex"]),
        ("exps=XPU", ["'exps=XPU'", "unknown device 'XPU'", "CPU or CUDA0"]),
        ("exps=CUDA1", ["unknown device 'CUDA1'", "one GPU: CUDA0"]),
        ("exps=", ["unknown device ''"]),
        ("a=b=CPU", ["unknown device 'b=CPU'"]),  # llama.cpp splits at the first '=' too
    ],
)
def test_bad_override_tensor_rules_name_the_rule(value, words):
    with pytest.raises(InvalidOptionError) as e:
        override_tensor_rules(value)
    for w in words:
        assert w in str(e.value)


def test_first_matching_rule_wins_in_command_line_order():
    ot = ("-ot", r"blk\.3\.ffn_up_exps=CUDA0")
    first = Placement.preset(gpu=True, user=user_rules([ot, ("--cpu-moe", None)]))
    assert first.resolve("blk.3.ffn_up_exps.weight") == ("cuda", "gguf")
    assert first.resolve("blk.4.ffn_up_exps.weight") == ("cpu", "native")
    after = Placement.preset(gpu=True, user=user_rules([("--cpu-moe", None), ot]))
    assert after.resolve("blk.3.ffn_up_exps.weight") == ("cpu", "native")


def test_llama_cpp_expert_regex():
    # llama.cpp common/common.h LLM_FFN_EXPS_REGEX, searched in the tensor name
    assert EXPS_REGEX == r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
    p = Placement.preset(gpu=True, user=user_rules([("--cpu-moe", None)]))
    for name in (
        "blk.7.ffn_gate_up_exps.weight",
        "blk.7.ffn_down_chexps.weight",
        "blk.7.ffn_gate_exps.weight",
    ):
        assert p.resolve(name) == ("cpu", "native"), name
    assert p.resolve("blk.7.ffn_gate_shexp.weight") == ("cuda", "gguf")


def test_n_cpu_moe_keeps_the_first_n_blocks_in_ram_and_the_rest_on_the_gpu():
    p = Placement.preset(gpu=True, user=n_cpu_moe_rules(2))
    assert p.resolve("blk.0.ffn_up_exps.weight") == ("cpu", "native")
    assert p.resolve("blk.1.ffn_down_exps.weight") == ("cpu", "native")
    # blk\.1 must not catch blk.10..19 (llama.cpp's regex has the dot after the number)
    assert p.resolve("blk.10.ffn_down_exps.weight") == ("cuda", "gguf")
    assert p.resolve("blk.2.ffn_gate_exps.weight") == ("cuda", "gguf")
    assert user_rules([("--n-cpu-moe", "0")])[0].device == "cuda"  # 0: every expert on the GPU


@pytest.mark.parametrize("value", ["-1", "x", ""])
def test_bad_n_cpu_moe(value):
    with pytest.raises(InvalidOptionError, match="--n-cpu-moe"):
        user_rules([("--n-cpu-moe", value)])


def test_gpu_preset():
    p = Placement.preset(gpu=True)
    got = {n: p.resolve(n) for n in R1_NAMES}
    assert got == {
        "token_embd.weight": ("cpu", "rows"),
        "blk.0.attn_norm.weight": ("cuda", "f32"),
        "blk.0.attn_q_a.weight": ("cuda", "gguf"),
        "blk.0.attn_k_b.weight": ("cuda", "bf16"),
        "blk.0.ffn_gate.weight": ("cuda", "gguf"),
        "blk.3.ffn_gate_inp.weight": ("cuda", "f32"),
        "blk.3.exp_probs_b.bias": ("cuda", "f32"),
        "blk.3.ffn_up_exps.weight": ("cpu", "native"),
        "blk.3.ffn_up_shexp.weight": ("cuda", "gguf"),
        "blk.60.ffn_down_exps.weight": ("cpu", "native"),
        "output.weight": ("cuda", "gguf"),
    }
    assert p.compute_device == "cuda"


def test_cpu_preset():
    p = Placement.preset(gpu=False)
    assert p.compute_device == "cpu"
    assert {p.resolve(n)[0] for n in R1_NAMES} == {"cpu"}
    assert p.resolve("blk.3.ffn_up_exps.weight") == ("cpu", "native")
    assert p.resolve("blk.0.attn_norm.weight") == ("cpu", "f32")


def test_norms_and_routers_stay_beside_the_computation_whatever_the_rules():
    p = Placement.preset(gpu=True, user=override_tensor_rules("norm=CPU,gate_inp=CPU,token_embd=CUDA0"))
    assert p.resolve("blk.0.attn_norm.weight") == ("cuda", "f32")
    assert p.resolve("blk.3.ffn_gate_inp.weight") == ("cuda", "f32")
    assert p.resolve("token_embd.weight") == ("cpu", "rows")
    check_user_rules(p, R1_NAMES, gpu=True)  # nothing a user rule placed can fail


def test_gpu_rule_without_a_gpu_is_refused():
    p = Placement.preset(gpu=False, user=override_tensor_rules(r"blk\.60\.=CUDA0"))
    with pytest.raises(InvalidOptionError) as e:
        check_user_rules(p, R1_NAMES, gpu=False)
    assert "-ot 'blk\\.60\\.=CUDA0' puts blk.60.ffn_down_exps.weight on the GPU" in str(e.value)
    assert "no CUDA GPU" in str(e.value)
    # a rule that matches nothing asks for nothing
    check_user_rules(
        Placement.preset(gpu=False, user=override_tensor_rules("nothing=CUDA0")), R1_NAMES, gpu=False
    )


def test_non_expert_matrix_in_ram_beside_a_gpu_is_refused():
    p = Placement.preset(gpu=True, user=override_tensor_rules(r"blk\.0\.=CPU"))
    with pytest.raises(InvalidOptionError) as e:
        check_user_rules(p, R1_NAMES, gpu=True)
    assert "puts blk.0.attn_q_a.weight in RAM" in str(e.value)
    assert "exps=CPU" in str(e.value)


def test_rule_validation():
    with pytest.raises(MoeboxError, match="unknown format"):
        PlacementRule(".", "cpu", "int3")
    with pytest.raises(MoeboxError, match="native weights live on the CPU"):
        PlacementRule(".", "cuda", "native")
    with pytest.raises(MoeboxError, match="gguf weights live on the GPU"):
        PlacementRule(".", "cpu", "gguf")
    with pytest.raises(MoeboxError, match="not a valid regex"):
        PlacementRule("(", "cpu", "native")
