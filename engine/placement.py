"""Where each GGUF tensor lives and in which format: ordered rules, first match wins.

A rule is a regex on the GGUF tensor name and a (device, format) pair:
  format "native": the GGUF blocks used in place from the mmap by the CPU kernels
                   (float tensors of a small size are used as torch tensors);
  format "gguf":   the GGUF blocks copied into VRAM, multiplied there by the GPU kernels
                   of engine/gpu (a type without a GPU kernel is loaded as bf16 instead);
  format "f32" / "bf16": dequantized into a torch tensor of that dtype on the device;
  format "rows":  an embedding table read row by row from the mmap.

The rules of a model, in order:
  1. pinned: what the model code needs in one place whatever the user asks (the embedding
     read by rows from RAM; norms, biases, routers and MLA's k_b/v_b as torch tensors
     beside the computation);
  2. the user's rules, as llama.cpp spells them: `-ot REGEX=DEVICE` (several, and
     comma-separated lists), `--cpu-moe`, `--n-cpu-moe N`, in command-line order;
  3. the automatic fit of routed experts into the VRAM left over (engine/plan.py);
  4. the preset: routed experts in RAM, every other matrix on the GPU (or, without a GPU,
     every matrix through the native CPU kernels).
Model code never decides devices.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.errors import InvalidOptionError, MoeboxError

FORMATS = ("native", "gguf", "f32", "bf16", "rows")

# llama.cpp's LLM_FFN_EXPS_REGEX (common/common.h): the routed-expert tensors of a layer.
EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"

# Devices as llama.cpp names buffer types in -ot (exact names there: CPU, CUDA0), and what
# each means for a matrix here. CUDA and GPU are accepted as names of the one GPU.
_DEVICES = {
    "cpu": ("cpu", "native"),
    "cuda0": ("cuda", "gguf"),
    "cuda": ("cuda", "gguf"),
    "gpu": ("cuda", "gguf"),
}
DEVICE_NAMES = "CPU or CUDA0 (also CUDA, GPU; any case)"

# With a GPU computing, the tensors a user rule may put in RAM: the routed experts (the MoE
# layer hands their inputs to the CPU kernels) and the embedding (read by rows in RAM anyway).
_CPU_SIDE_WITH_GPU = re.compile(r"_(ch|)exps\.weight$|^token_embd\.weight$")


@dataclass(frozen=True)
class PlacementRule:
    pattern: str
    device: str
    format: str
    source: str = "preset"  # what made the rule: "preset", "-ot 'exps=CPU'", "--cpu-moe", "auto-fit", ...

    def __post_init__(self):
        if self.format not in FORMATS:
            raise MoeboxError(
                f"placement rule {self.pattern!r}: unknown format {self.format!r} (one of {FORMATS})"
            )
        if self.format == "native" and self.device != "cpu":
            raise MoeboxError(
                f"placement rule {self.pattern!r}: native weights live on the CPU, not {self.device}"
            )
        if self.format == "gguf" and self.device != "cuda":
            raise MoeboxError(
                f"placement rule {self.pattern!r}: gguf weights live on the GPU (cuda), not {self.device}"
            )
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise MoeboxError(f"placement rule {self.pattern!r} is not a valid regex: {exc}") from None

    @property
    def from_user(self) -> bool:
        return self.source not in ("preset", "pinned", "auto-fit")


class Placement:
    """Ordered rules; `resolve(name)` gives (device, format) of the first rule that matches."""

    def __init__(self, rules: Sequence[PlacementRule], compute_device: str = "cpu"):
        self.rules = list(rules)
        self.compute_device = compute_device  # where activations, KV cache and small tensors live
        self._compiled = [(re.compile(r.pattern), r) for r in self.rules]

    def rule_for(self, name: str) -> PlacementRule | None:
        """The first rule whose regex is found in `name` (re.search, as llama.cpp's std::regex_search)."""
        for regex, rule in self._compiled:
            if regex.search(name):
                return rule
        return None

    def resolve(self, name: str) -> tuple[str, str]:
        rule = self.rule_for(name)
        return (rule.device, rule.format) if rule else (self.compute_device, "f32")

    @classmethod
    def preset(
        cls,
        config=None,
        *,
        gpu: bool | None = None,
        user: Sequence[PlacementRule] = (),
        fitted: Sequence[PlacementRule] = (),
    ) -> Placement:
        """The rules of a model: pinned, then `user`'s rules, then `fitted` (the automatic
        fit), then the preset.

        CPU-only: every matrix through the native kernels, embeddings row-wise.
        With a GPU: routed experts in RAM through the native kernels; norms, biases and
        routers on the GPU in f32; MLA's k_b/v_b (used as dense tensors) in bf16; every
        other matrix on the GPU in its GGUF blocks."""
        if gpu is None:
            import torch

            gpu = torch.cuda.is_available()
        small = r"(norm|ffn_gate_inp(_shexp)?)\.weight$|\.bias$"
        if not gpu:
            pinned = [
                PlacementRule(r"^token_embd\.weight$", "cpu", "rows", "pinned"),
                PlacementRule(small, "cpu", "f32", "pinned"),
                PlacementRule(r"attn_(k_b|v_b|kv_b)\.weight$", "cpu", "f32", "pinned"),
            ]
            default = [PlacementRule(r"\.weight$", "cpu", "native")]
            device = "cpu"
        else:
            pinned = [
                PlacementRule(r"^token_embd\.weight$", "cpu", "rows", "pinned"),
                PlacementRule(small, "cuda", "f32", "pinned"),
                PlacementRule(r"attn_(k_b|v_b|kv_b)\.weight$", "cuda", "bf16", "pinned"),
            ]
            default = [
                PlacementRule(r"_exps\.weight$", "cpu", "native"),
                PlacementRule(r".", "cuda", "gguf"),
            ]
            device = "cuda"
        return cls([*pinned, *user, *fitted, *default], compute_device=device)

    def explain(self) -> list[str]:
        return [f"{r.pattern!r} -> {r.device}/{r.format} ({r.source})" for r in self.rules]


# --- the user's rules, as llama.cpp spells them ------------------------------------------


def parse_device(name: str, rule: str) -> tuple[str, str]:
    """(device, format) of a llama.cpp buffer-type name: CPU -> cpu/native, CUDA0 -> cuda/gguf."""
    try:
        return _DEVICES[name.strip().lower()]
    except KeyError:
        hint = " (moebox uses one GPU: CUDA0)" if re.fullmatch(r"(?i)cuda\d+", name.strip()) else ""
        raise InvalidOptionError(
            f"-ot '{rule}': unknown device {name!r}{hint}; use {DEVICE_NAMES}, e.g. -ot 'exps=CPU'"
        ) from None


def override_tensor_rules(value: str) -> list[PlacementRule]:
    """The rules of one `-ot` / `--override-tensor` value: `REGEX=DEVICE[,REGEX=DEVICE...]`.

    As llama.cpp's parse_tensor_buffer_overrides: the value is split at every comma, each
    part at its first `=`; the regex is searched for in tensor names (so `exps` matches
    `blk.3.ffn_up_exps.weight`)."""
    rules = []
    for part in value.split(","):
        pattern, eq, device = part.partition("=")
        if not eq:
            raise InvalidOptionError(
                f"-ot '{part}': a rule is REGEX=DEVICE, e.g. -ot 'exps=CPU' or -ot 'blk\\.(5[0-9]|60)\\.=CUDA0'"
            )
        dev, fmt = parse_device(device, part)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InvalidOptionError(f"-ot '{part}': {pattern!r} is not a valid regex ({exc})") from None
        rules.append(PlacementRule(pattern, dev, fmt, f"-ot '{part}'"))
    return rules


def cpu_moe_rules() -> list[PlacementRule]:
    """`--cpu-moe`: every routed expert in RAM (llama.cpp's llm_ffn_exps_cpu_override)."""
    return [PlacementRule(EXPS_REGEX, "cpu", "native", "--cpu-moe")]


def n_cpu_moe_rules(n: int) -> list[PlacementRule]:
    """`--n-cpu-moe N`: the routed experts of blocks 0..N-1 in RAM, as llama.cpp counts them
    (block numbers, dense leading blocks included), the other routed experts on the GPU."""
    if n < 0:
        raise InvalidOptionError(f"--n-cpu-moe {n}: give a number of layers >= 0")
    source = f"--n-cpu-moe {n}"
    rules = [PlacementRule(rf"blk\.{i}{EXPS_REGEX}", "cpu", "native", source) for i in range(n)]
    # llama.cpp puts what no override names on the GPU (-ngl 99); here the preset would keep
    # the remaining experts in RAM, so the flag says where they go.
    rules.append(PlacementRule(EXPS_REGEX, "cuda", "gguf", source))
    return rules


PlacementFlag = tuple[str, str | None]  # ("-ot", "exps=CPU"), ("--cpu-moe", None), ("--n-cpu-moe", "10")


def user_rules(flags: Iterable[PlacementFlag]) -> list[PlacementRule]:
    """The user's rules from the placement flags in command-line order (the first match wins,
    as in llama.cpp, so `-ot` before `--cpu-moe` takes precedence over it and after it does not)."""
    rules: list[PlacementRule] = []
    for flag, value in flags:
        if flag in ("-ot", "--override-tensor"):
            rules += override_tensor_rules(value or "")
        elif flag in ("-cmoe", "--cpu-moe"):
            rules += cpu_moe_rules()
        elif flag in ("-ncmoe", "--n-cpu-moe"):
            try:
                n = int(value or "")
            except ValueError:
                raise InvalidOptionError(f"--n-cpu-moe {value!r}: give a number of layers") from None
            rules += n_cpu_moe_rules(n)
        else:
            raise InvalidOptionError(f"unknown placement flag {flag!r}")
    return rules


def check_user_rules(placement: Placement, names: Iterable[str], *, gpu: bool) -> None:
    """Raise InvalidOptionError for a user rule that asks for what cannot run: a GPU where
    there is none, or a matrix other than a routed expert in RAM while the GPU computes."""
    for name in names:
        rule = placement.rule_for(name)
        if rule is None or not rule.from_user:
            continue
        if rule.device == "cuda" and not gpu:
            raise InvalidOptionError(
                f"{rule.source} puts {name} on the GPU, but no CUDA GPU is visible to torch; "
                "use CPU in the rule or drop it"
            )
        if rule.device == "cpu" and gpu and not _CPU_SIDE_WITH_GPU.search(name):
            raise InvalidOptionError(
                f"{rule.source} puts {name} in RAM; with a GPU, only routed experts (ffn_*_exps) can be "
                "computed on the CPU. Narrow the regex (e.g. 'exps=CPU'), or hide the GPU "
                "(CUDA_VISIBLE_DEVICES=) to run everything on the CPU"
            )
