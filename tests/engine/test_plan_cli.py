"""`moebox inspect MODEL --plan` and the placement flags of serve / chat / bench model, on the
CPU (a GPU is pretended with --vram), and LLM.from_gguf(placement=...) on a CPU-only machine."""

from __future__ import annotations

import pytest
import torch

from engine.errors import InvalidOptionError
from engine.llm import LLM
from engine.placement import user_rules
from engine.tools.synth import write_synthetic_gguf
from moebox.cli import build_parser, main

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    return str(
        write_synthetic_gguf(tmp_path_factory.mktemp("cli") / "v3.gguf", "tiny-deepseek-v3", qtype="Q4_K")
    )


def test_placement_flags_keep_command_line_order():
    argv = ["-ot", "a=CPU", "--cpu-moe", "--n-cpu-moe", "3", "--override-tensor", "b=CUDA0,c=CPU", "-cmoe"]
    expected = [
        ("-ot", "a=CPU"),
        ("--cpu-moe", None),
        ("--n-cpu-moe", "3"),
        ("--override-tensor", "b=CUDA0,c=CPU"),
        ("-cmoe", None),
    ]
    for cmd in (["serve"], ["chat"], ["bench", "model"], ["inspect", "--plan"]):
        assert build_parser().parse_args([*cmd, *argv]).placement == expected, cmd
        assert build_parser().parse_args(cmd).placement is None
    rules = user_rules(expected)
    assert [r.source for r in rules][:2] == ["-ot 'a=CPU'", "--cpu-moe"]
    # serve's -n (--n-predict) and bench's -n (--gen-tokens) stay themselves
    args = build_parser().parse_args(["serve", "-n", "5", "-ncmoe", "2"])
    assert args.n_predict == 5 and args.placement == [("-ncmoe", "2")]


def test_inspect_plan_cpu_only(v3, capsys):
    assert main(["inspect", v3, "--plan", "--vram", "0", "--ctx", "1000"]) == 0
    out = capsys.readouterr().out
    assert "context 1,000 tokens" in out
    assert "routed experts  cpu     native" in out
    assert "KV cache" in out and "4 layers x (64 + 32) x 4 bytes = 1,536 bytes/token x 1,000" in out
    assert "VRAM  none" in out and "fits: yes" in out


def test_inspect_plan_with_a_pretended_gpu(v3, capsys):
    assert main(["inspect", v3, "--plan", "--vram", "24", "--ctx", "2048"]) == 0
    out = capsys.readouterr().out
    assert "routed experts  cuda" in out and "1-3" in out  # auto-fit: all three MoE layers fit
    assert "auto-fit: routed experts of 3 MoE layers 1-3 (" in out
    assert "KV cache        cuda    f16" in out
    assert "fits: yes" in out
    # rules go before the preset; 1 GiB + 15 MiB leaves 15 MiB after the reserve: too little
    assert main(["inspect", v3, "--plan", "--vram", "1.015", "--ctx", "2048", "-ot", "exps=CUDA0"]) == 1
    out = capsys.readouterr().out
    assert "rule  -ot 'exps=CUDA0': 'exps' -> cuda/gguf" in out
    assert "fits: no" in out and "--cpu-moe" in out


@pytest.mark.parametrize(
    "flags,words",
    [
        (["-ot", "exps"], "REGEX=DEVICE"),
        (["-ot", "exps=TPU"], "unknown device 'TPU'"),
        (["-ot", "exps=CUDA0"], "no CUDA GPU"),
        (["--n-cpu-moe", "-2"], "--n-cpu-moe -2"),
    ],
)
def test_bad_rules_fail_with_their_message(v3, capsys, flags, words):
    assert main(["inspect", v3, "--plan", "--vram", "0", *flags]) == 2
    assert words in capsys.readouterr().err


def test_serve_refuses_a_gpu_rule_without_a_gpu_before_the_port_opens(v3, capsys, monkeypatch):
    import gateway.server

    monkeypatch.setattr(gateway.server, "serve", lambda *a, **k: pytest.fail("the server started"))
    assert main(["serve", v3, "-ot", r"blk\.3\.ffn_.*_exps=CUDA0"]) == 2
    assert "puts blk.3.ffn_gate_exps.weight on the GPU, but no CUDA GPU" in capsys.readouterr().err


def test_llm_takes_the_rules(v3):
    llm = LLM.from_gguf(v3, progress=False, context_length=512, placement=user_rules([("--cpu-moe", None)]))
    try:
        assert llm.memory_plan.placement.resolve("blk.1.ffn_up_exps.weight") == ("cpu", "native")
        assert llm.memory_plan.context == llm.context_length == 512
        assert [r.source for r in llm.memory_plan.user_rules] == ["--cpu-moe"]
        out = list(llm.generate([1, 2, 3], None))
        assert out[-1].finish_reason is not None
    finally:
        llm.close()
    with pytest.raises(InvalidOptionError, match="no CUDA GPU"):
        LLM.from_gguf(v3, progress=False, placement=user_rules([("-ot", "exps=CUDA0")]))
