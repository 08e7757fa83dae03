"""`moebox inspect`: what a GGUF model is and where its bytes are."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import ModelConfig, model_config
from engine.gguf_file import GGUFModel, open_gguf
from engine.plan import GROUP_ORDER, TENSOR_GROUPS, MemoryPlan, tensor_group

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


def _layers(layers: tuple[int, ...]) -> str:
    """(3, 4, 5, 9) -> '3-5, 9'."""
    out: list[str] = []
    for i in layers:
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def plan_table(plan: MemoryPlan, config: ModelConfig) -> list[str]:
    """Per tensor group and device: the format, tensors, MiB and layers; then the KV cache,
    the work buffers, the totals and whether it fits."""
    kv_dev = plan.placement.compute_device
    rows = [
        (g.group, g.device, g.format, str(g.n_tensors), _mib(g.n_bytes), _layers(g.layers))
        for g in plan.groups()
    ]
    if config.mla is not None:
        mla = config.mla
        kv_how = f"{config.n_layers} layers x ({mla.kv_lora_rank} + {mla.qk_rope_head_dim})"
    else:
        kv_how = f"{config.n_layers} layers x 2 x {config.n_kv_heads} x {config.head_dim}"
    per_elem = {"f16": 2, "bf16": 2, "f32": 4}[plan.kv_dtype]
    rows.append(
        (
            "KV cache",
            kv_dev,
            plan.kv_dtype,
            "",
            _mib(plan.kv_bytes),
            f"{kv_how} x {per_elem} bytes = {plan.kv_per_token:,} bytes/token x {plan.context:,}",
        )
    )
    rows.append(
        (
            "work buffers",
            kv_dev,
            "",
            "",
            _mib(plan.work_bytes),
            _work_how(plan),
        )
    )
    header = ("group", "device", "format", "tensors", "MiB", "layers / how")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]

    def line(r) -> str:
        return (
            f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
            f"{r[3]:>{widths[3]}}  {r[4]:>{widths[4]}}  {r[5]}"
        ).rstrip()

    lines = [line(header), *map(line, rows)]
    lines.append("")
    if plan.gpu:
        lines.append(
            f"VRAM  {_mib(plan.vram_need)} MiB needed: {_mib(plan.weight_bytes('cuda'))} weights + "
            f"{_mib(plan.kv_bytes)} KV cache + {_mib(plan.work_bytes)} work buffers; "
            f"{_mib(plan.vram_budget)} MiB usable ({plan.memory.vram_source}, less a "
            f"{_mib(plan.reserve)} MiB reserve)"
        )
    else:
        lines.append(f"VRAM  none: no GPU ({plan.memory.vram_source}); everything in RAM")
    lines.append(
        f"RAM   {_mib(plan.ram_need)} MiB needed of {_mib(plan.memory.ram)} MiB ({plan.memory.ram_source})"
    )
    for note in (plan.context_note, plan.auto_fit):
        if note:
            lines.append(note)
    for r in plan.user_rules:
        lines.append(f"rule  {r.source}: '{r.pattern}' -> {r.device}/{r.format}")
    if plan.fits_vram and plan.fits_ram:
        lines.append("fits: yes")
    elif not plan.fits_vram:
        lines.append(
            f"fits: no, {_mib(plan.vram_need - plan.vram_budget)} MiB of VRAM short. Change: "
            + "; or ".join(plan.advice())
        )
    else:
        lines.append(
            f"fits: VRAM yes; RAM {_mib(plan.ram_need - plan.memory.ram)} MiB short: the mmapped weights "
            "that do not fit the page cache are re-read from disk at every use (it runs, slowly); "
            "more RAM, or a smaller quantization"
        )
    return lines


def _work_how(plan: MemoryPlan) -> str:
    w, ctx = plan.work, plan.context
    how = f"{w.fixed / 2**20:,.1f} MiB + {w.per_context_token:,} bytes/token of context"
    if w.heads:
        from engine.layers.mla import expanded_heads

        group = expanded_heads(w.heads, ctx, w.expanded_values, w.act_bytes)
        how += (
            f" + MLA keys/values of {group} of {w.heads} heads at a time "
            f"({w.expanded_values} values x {w.act_bytes} bytes per head and token)"
        )
    return how


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
    return "\n".join([head, "", *plan_table(plan, config)]), plan.fits_vram and plan.fits_ram


def print_plan(path: str | Path, **kwargs) -> bool:
    text, fits = plan_text(path, **kwargs)
    print(text)
    return fits
