"""Where each GGUF tensor lives and in which format: ordered rules, first match wins.

A rule is a regex on the GGUF tensor name and a (device, format) pair:
  format "native": the GGUF blocks used in place from the mmap by the CPU kernels
                   (float tensors of a small size are used as torch tensors);
  format "f32" / "bf16": dequantized into a torch tensor of that dtype on the device;
  format "rows":  an embedding table read row by row from the mmap.
Presets per architecture; model code never decides devices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import MoeboxError

FORMATS = ("native", "f32", "bf16", "rows")


@dataclass(frozen=True)
class PlacementRule:
    pattern: str
    device: str
    format: str

    def __post_init__(self):
        if self.format not in FORMATS:
            raise MoeboxError(
                f"placement rule {self.pattern!r}: unknown format {self.format!r} (one of {FORMATS})"
            )
        if self.format == "native" and self.device != "cpu":
            raise MoeboxError(
                f"placement rule {self.pattern!r}: native weights live on the CPU, not {self.device}"
            )
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise MoeboxError(f"placement rule {self.pattern!r} is not a valid regex: {exc}") from None


class Placement:
    """Ordered rules; `resolve(name)` gives (device, format) of the first rule that matches."""

    def __init__(self, rules: list[PlacementRule], compute_device: str = "cpu"):
        self.rules = list(rules)
        self.compute_device = compute_device  # where activations, KV cache and small tensors live
        self._compiled = [(re.compile(r.pattern), r) for r in self.rules]

    def resolve(self, name: str) -> tuple[str, str]:
        for regex, rule in self._compiled:
            if regex.search(name):
                return rule.device, rule.format
        return self.compute_device, "f32"

    @classmethod
    def preset(cls, config, *, gpu: bool | None = None) -> Placement:
        """CPU-only: every matrix through the native kernels, embeddings row-wise.
        With a GPU: routed experts in RAM through the native kernels, the rest on the GPU in bf16."""
        if gpu is None:
            import torch

            gpu = torch.cuda.is_available()
        if not gpu:
            return cls(
                [
                    PlacementRule(r"^token_embd\.weight$", "cpu", "rows"),
                    PlacementRule(
                        r"(norm|_b\.bias|\.bias|ffn_gate_inp(_shexp)?)\.weight$|\.bias$", "cpu", "f32"
                    ),
                    PlacementRule(r"attn_(k_b|v_b|kv_b)\.weight$", "cpu", "f32"),
                    PlacementRule(r"\.weight$", "cpu", "native"),
                ],
                compute_device="cpu",
            )
        return cls(
            [
                PlacementRule(r"^token_embd\.weight$", "cpu", "rows"),
                PlacementRule(r"_exps\.weight$", "cpu", "native"),
                PlacementRule(r"(norm|ffn_gate_inp(_shexp)?)\.weight$|\.bias$", "cuda", "f32"),
                PlacementRule(r".", "cuda", "bf16"),
            ],
            compute_device="cuda",
        )

    def explain(self) -> list[str]:
        return [f"{r.pattern!r} -> {r.device}/{r.format}" for r in self.rules]
