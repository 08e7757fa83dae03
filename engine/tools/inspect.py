"""`moebox inspect`: what a GGUF model is and where its bytes are."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import ModelConfig, model_config
from engine.gguf_file import GGUFModel, open_gguf
from engine.plan import GROUP_ORDER, TENSOR_GROUPS, tensor_group

__all__ = ["TENSOR_GROUPS", "tensor_group", "inspect_text", "plan_text", "print_inspect", "print_plan"]


@dataclass
class GroupSummary:
    n_tensors: int = 0
    n_bytes: int = 0
    types: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def summarize(model: GGUFModel) -> dict[str, GroupSummary]:
    groups: dict[str, GroupSummary] = defaultdict(GroupSummary)
    for t in model:
        g = groups[tensor_group(t.name)]
        g.n_tensors += 1
        g.n_bytes += t.n_bytes
        g.types[t.type_name] += t.n_bytes
    return {name: groups[name] for name in GROUP_ORDER if name in groups}


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def describe(model: GGUFModel, config: ModelConfig) -> list[tuple[str, str]]:
    rows = [
        (
            "file",
            str(model.path) + (f" (+{len(model.files) - 1} more parts)" if len(model.files) > 1 else ""),
        ),
        ("architecture", config.variant),
        ("name", config.name),
        ("layers", str(config.n_layers)),
        ("hidden size", str(config.hidden_size)),
        ("attention heads (q/kv)", f"{config.n_heads}/{config.n_kv_heads}"),
        ("context length", f"{config.context_length:,}"),
    ]
    if config.rope_scaling.type != "none":
        rs = config.rope_scaling
        rows.append(
            ("rope scaling", f"{rs.type} x{rs.factor:g} (original context {rs.original_context_length:,})")
        )
    if config.mla:
        mla = config.mla
        rows.append(
            (
                "MLA",
                f"q_lora {mla.q_lora_rank or 'none'}, kv_lora {mla.kv_lora_rank}, "
                f"rope dims {mla.qk_rope_head_dim}, layout {mla.layout.value}",
            )
        )
    if config.moe:
        moe = config.moe
        rows.append(
            (
                "experts",
                f"{moe.n_experts} routed, {moe.n_experts_used} used per token, {moe.n_shared_experts} shared",
            )
        )
        routing = moe.gating.value
        if moe.n_groups > 1:
            routing += f", group-limited ({moe.n_groups_used} of {moe.n_groups} groups)"
        if moe.has_probs_bias:
            routing += ", bias-corrected"
        rows.append(("routing", routing))
        if moe.leading_dense_blocks:
            rows.append(("leading dense layers", str(moe.leading_dense_blocks)))
    tokens = model.get("tokenizer.ggml.tokens")
    rows.append(
        (
            "tokenizer",
            f"{model.get('tokenizer.ggml.model', 'none')} (pre: {model.get('tokenizer.ggml.pre', '-')}), "
            f"{len(tokens) if tokens is not None else 0:,} tokens",
        )
    )
    rows.append(("chat template", "yes" if model.get("tokenizer.chat_template") else "no (fallback)"))
    rows.append(("total size", f"{_mib(model.n_bytes)} MiB in {len(model.tensors)} tensors"))
    return rows


def inspect_text(path: str | Path) -> str:
    with open_gguf(path) as model:
        config = model_config(model)
        rows = describe(model, config)
        groups = summarize(model)
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    header = ("group", "tensors", "MiB", "types")
    table = [
        (
            name,
            str(g.n_tensors),
            _mib(g.n_bytes),
            ", ".join(f"{t} {_mib(b)}" for t, b in sorted(g.types.items(), key=lambda kv: -kv[1])),
        )
        for name, g in groups.items()
    ]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(3)]
    lines.append(f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:>{widths[2]}}  {header[3]}")
    for r in table:
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}")
    return "\n".join(lines)


def print_inspect(path: str | Path) -> None:
    print(inspect_text(path))


# --- `moebox inspect --plan` -----------------------------------------------------------------


def plan_text(
    path: str | Path,
    *,
    rules=(),
    context: int | None = None,
    vram_gib: float | None = None,
    ram_gib: float | None = None,
    kv_cache_dtype: str = "auto",
) -> tuple[str, bool]:
    """The placement plan of a model from its headers: (text, whether it fits).
    vram_gib: plan for a GPU with that much free (default: this machine's GPU, else none)."""
    from engine.plan import machine_memory, plan_memory

    memory = machine_memory(vram_gib, ram_gib)
    with open_gguf(path) as model:
        config = model_config(model)
        plan = plan_memory(
            model, config, rules=rules, memory=memory, context=context, kv_cache_dtype=kv_cache_dtype
        )
        head = f"plan for {model.path}: {config.variant}, context {plan.context:,} tokens"
    return "\n".join([head, "", *plan.table()]), plan.fits_vram and plan.fits_ram


def print_plan(path: str | Path, **kwargs) -> bool:
    text, fits = plan_text(path, **kwargs)
    print(text)
    return fits
