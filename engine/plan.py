"""The memory plan of a model: where every tensor goes, what it takes in VRAM and RAM,
the KV cache and work buffers at the chosen context, and whether it all fits.

Read from the GGUF headers alone (no tensor data), so `moebox inspect --plan` runs on any
machine; the loader computes the same plan, logs it and loads by its placement.

    plan = plan_memory(gguf, config, rules=user_rules(flags), memory=machine_memory())
    plan.raise_if_unfit()
    model = load_model(gguf, config, plan.placement, ...)

With a GPU and no user rule, routed experts are fitted automatically: after the GPU's
weights, the KV cache and the work buffers, the experts of as many MoE layers as fit in
the free VRAM less VRAM_RESERVE go to the GPU, the LAST layers first (llama.cpp's
--n-cpu-moe N keeps the FIRST N in RAM: the fit is --n-cpu-moe with the smallest N that fits).
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from gguf import GGMLQuantizationType

from engine.errors import InvalidOptionError
from engine.placement import EXPS_REGEX, Placement, PlacementRule, check_user_rules

GiB = 2**30
MiB = 2**20

# Kept free on the GPU beyond the plan: the CUDA caching allocator's fragmentation, cuBLAS
# workspaces and the kernels' own scratch, which no tensor shape tells.
VRAM_RESERVE = 1 * GiB
# A step the work buffers are sized for, as the server runs by default: one request's prompt
# chunk (--prefill-chunk 256) beside one decode row of each other live request (--parallel 32),
# whose last rows give logits. A longer single prefill needs more.
PREFILL_CHUNK = 256
PARALLEL = 32
# The context the plan lowers to at the least when the model's own does not fit.
MIN_CONTEXT = 4096

Q = GGMLQuantizationType

# Ordered: the first pattern that matches a tensor name decides its group.
TENSOR_GROUPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("embeddings", re.compile(r"^token_embd\.")),
    ("output", re.compile(r"^(output|output_norm)\.")),
    ("routed experts", re.compile(r"\.ffn_(gate|up|down|gate_up)_(ch|)exps\.")),
    ("shared experts", re.compile(r"\.ffn_(gate|up|down)_shexp\.")),
    ("router", re.compile(r"\.(ffn_gate_inp|ffn_gate_inp_shexp|exp_probs_b)\.")),
    ("norms", re.compile(r"\.(attn_norm|ffn_norm)\.")),
    ("attention", re.compile(r"\.attn_")),
    ("dense FFN", re.compile(r"\.ffn_(gate|up|down)\.")),
)
GROUP_ORDER = [name for name, _ in TENSOR_GROUPS] + ["other"]
_LAYER = re.compile(r"^blk\.(\d+)\.")


def tensor_group(name: str) -> str:
    for group, pattern in TENSOR_GROUPS:
        if pattern.search(name):
            return group
    return "other"


def gpu_kernel(ggml_type: int) -> bool:
    """Whether engine/gpu multiplies this GGUF type in its blocks (else it loads as bf16). Known
    without Triton, so a machine without a GPU plans for one correctly."""
    from engine.gpu.gguf_layout import GPU_TYPES

    return ggml_type in GPU_TYPES


def native_runs() -> bool:
    """Whether moebox_native's kernels run on this CPU (else CPU matrices load as f32)."""
    from engine.errors import NativeUnavailableError
    from engine.native import native_kernels

    try:
        native_kernels()
    except NativeUnavailableError:
        return False
    return True


def held_format(fmt: str, ggml_type: int, *, gpu_kernel_for=gpu_kernel, native: bool = True) -> str:
    """The format a tensor is held in after the loader's fallbacks (engine/models/weights.py):
    gguf of an F32/F16 tensor -> that float type as a torch tensor; gguf without a GPU kernel
    for its type -> bf16; native without the CPU kernels -> f32."""
    if fmt == "gguf":
        if ggml_type in (Q.F32, Q.F16):
            return "f32" if ggml_type == Q.F32 else "f16"
        return "gguf" if gpu_kernel_for(ggml_type) else "bf16"
    if fmt == "native" and not native:
        return "f32"
    return fmt


def held_bytes(fmt: str, ggml_type: int, n_elements: int, n_bytes: int) -> int:
    """Bytes a tensor of `n_bytes` in the file (n_elements values) takes held as `fmt`."""
    if fmt == "f32":
        return 4 * n_elements
    if fmt in ("bf16", "f16"):
        return 2 * n_elements
    if fmt == "gguf" and ggml_type != Q.BF16:
        values, held = _gpu_block_bytes(ggml_type)
        return n_elements // values * held
    return n_bytes  # native, rows: the GGUF blocks in place


@functools.cache
def _gpu_block_bytes(ggml_type: int) -> tuple[int, int]:
    """(values, bytes in VRAM) of one block of a type the GPU kernels read: the file's bytes
    repacked into engine/gpu's planes (a few formats unpack their 6-bit scales: Q4_K holds
    148 bytes per 256 values, not 144). Measured by repacking one block on the CPU."""
    import numpy as np
    import torch

    from engine.gpu.gguf_layout import layout_of, repack

    layout = layout_of(ggml_type)
    planes = repack(np.zeros(layout.block_bytes, np.uint8), layout, 1, layout.block, torch.device("cpu"))
    return layout.block, planes.nbytes


@dataclass(frozen=True)
class MachineMemory:
    """What the plan may use: free VRAM (None: no GPU) and RAM, in bytes."""

    vram: int | None
    ram: int
    vram_source: str = ""  # "free on <GPU name>", "--vram", ...
    ram_source: str = ""


def machine_memory(vram_gib: float | None = None, ram_gib: float | None = None) -> MachineMemory:
    """This machine's free VRAM (torch.cuda.mem_get_info; none without CUDA) and total RAM,
    or the sizes given (vram_gib: pretend a GPU with that much free; 0: no GPU)."""
    import psutil

    if vram_gib is not None:
        if vram_gib < 0:
            raise InvalidOptionError(f"--vram {vram_gib:g}: give GiB >= 0 (0 plans for the CPU only)")
        vram, vsrc = (int(vram_gib * GiB), f"--vram {vram_gib:g}") if vram_gib > 0 else (None, "--vram 0")
    else:
        vram, vsrc = _free_vram()
    if ram_gib is not None:
        if ram_gib <= 0:
            raise InvalidOptionError(f"--ram {ram_gib:g}: give GiB > 0")
        ram, rsrc = int(ram_gib * GiB), f"--ram {ram_gib:g}"
    else:
        ram, rsrc = psutil.virtual_memory().total, "total RAM"
    return MachineMemory(vram, ram, vsrc, rsrc)


def _free_vram() -> tuple[int | None, str]:
    import torch

    if not torch.cuda.is_available():
        return None, "no CUDA GPU"
    free, _ = torch.cuda.mem_get_info()
    return free, f"free on {torch.cuda.get_device_name()}"


@dataclass(frozen=True)
class WorkBuffers:
    """Temporaries of a forward pass on the compute device at a context of S tokens:
    `fixed` + `per_context_token` x S, and for MLA the keys and values expanded for one group
    of heads (engine/layers/mla.py takes as many heads at once as fit its EXPANDED_BYTES)."""

    fixed: int
    per_context_token: int
    heads: int = 0  # MLA: attention heads (0: no expanded keys and values)
    expanded_values: int = 0  # MLA: values expanded per head and context token
    act_bytes: int = 4

    def expanded(self, context: int) -> int:
        if not self.heads or context < 1:
            return 0
        from engine.layers.mla import expanded_heads

        group = expanded_heads(self.heads, context, self.expanded_values, self.act_bytes)
        return group * context * self.expanded_values * self.act_bytes

    def at(self, context: int) -> int:
        return self.fixed + self.per_context_token * context + self.expanded(context)


def work_buffers(
    config, *, chunk: int = PREFILL_CHUNK, parallel: int = PARALLEL, act_bytes: int = 4, cache_elem: int = 2
) -> WorkBuffers:
    """The largest temporaries one layer allocates in a step of a `chunk`-token prompt chunk
    and `parallel` rows in all, as the layers compute (activations in `act_bytes`; the cache
    stored in `cache_elem`):

    - attention over S context tokens, per request: MLA widens the cached latent and rope key
      to the activation dtype and expands keys and values (k_nope [g, S, nope], v [g, S, v],
      k = [k_nope, k_pe] [g, S, nope + rope]) for a group of g heads at a time; GQA widens
      K and V ([S, kv_heads, head_dim] each); both build a [chunk, S] boolean causal mask and
      call scaled_dot_product_attention, whose fused kernels keep no [heads, chunk, S] scores;
    - the step's activations (chunk + parallel rows): the residual stream, q, the widest FFN's
      gate/up/hidden rows (x 4 as input, gate, up and product coexist), and the logits of
      `parallel` rows.
    """
    h = config.hidden_size
    heads = expanded = 0
    if config.mla is not None:
        mla = config.mla
        latent = mla.kv_lora_rank + mla.qk_rope_head_dim
        per_token = (latent * act_bytes if act_bytes != cache_elem else 0) + chunk
        heads = config.n_heads
        expanded = 2 * mla.qk_nope_head_dim + mla.v_head_dim + mla.qk_rope_head_dim
        q_width = config.n_heads * (mla.qk_nope_head_dim + mla.qk_rope_head_dim)
    else:
        kv = 2 * config.n_kv_heads * config.head_dim
        per_token = (kv * act_bytes if act_bytes != cache_elem else 0) + chunk
        q_width = (config.n_heads + 2 * config.n_kv_heads) * config.head_dim
    ffn = max(config.ffn_dim, config.moe.expert_ffn_dim if config.moe else 0)
    if config.moe is not None:
        ffn = max(ffn, config.moe.shared_ffn_dim or config.moe.n_shared_experts * config.moe.expert_ffn_dim)
    fixed = (chunk + parallel) * (
        4 * h + 2 * q_width + 4 * ffn
    ) * act_bytes + parallel * config.vocab_size * 4
    return WorkBuffers(fixed, per_token, heads, expanded, act_bytes)


@dataclass(frozen=True)
class TensorPlan:
    name: str
    group: str
    type_name: str
    device: str  # cpu | cuda
    format: str  # as held, after fallbacks
    n_bytes: int  # as held
    source: str  # the rule that placed it
    layer: int | None


@dataclass(frozen=True)
class GroupRow:
    group: str
    device: str
    format: str
    n_tensors: int
    n_bytes: int
    layers: tuple[int, ...]


@dataclass
class MemoryPlan:
    config: object  # engine.config.ModelConfig
    placement: Placement
    tensors: list[TensorPlan]
    context: int
    kv_dtype: str
    kv_per_token: int
    work: WorkBuffers
    memory: MachineMemory
    reserve: int
    model_context: int
    context_note: str = ""  # why the context is not what was asked
    auto_fit: str = ""  # what the automatic fit chose, "" when it did not run
    user_rules: list[PlacementRule] = field(default_factory=list)

    # --- totals ---------------------------------------------------------------------------

    @property
    def gpu(self) -> bool:
        return self.placement.compute_device == "cuda"

    def weight_bytes(self, device: str) -> int:
        return sum(t.n_bytes for t in self.tensors if t.device == device)

    @property
    def kv_bytes(self) -> int:
        return self.kv_per_token * self.context

    @property
    def work_bytes(self) -> int:
        return self.work.at(self.context)

    @property
    def vram_need(self) -> int:
        return self.weight_bytes("cuda") + (self.kv_bytes + self.work_bytes if self.gpu else 0)

    @property
    def ram_need(self) -> int:
        return self.weight_bytes("cpu") + (0 if self.gpu else self.kv_bytes + self.work_bytes)

    @property
    def vram_budget(self) -> int:
        return max(0, (self.memory.vram or 0) - self.reserve)

    @property
    def fits_vram(self) -> bool:
        return not self.gpu or self.vram_need <= self.vram_budget

    @property
    def fits_ram(self) -> bool:
        return self.ram_need <= self.memory.ram

    def gpu_expert_bytes(self) -> dict[int, int]:
        """Bytes of routed experts on the GPU per layer."""
        out: dict[int, int] = defaultdict(int)
        for t in self.tensors:
            if t.group == "routed experts" and t.device == "cuda" and t.layer is not None:
                out[t.layer] += t.n_bytes
        return dict(sorted(out.items()))

    def groups(self) -> list[GroupRow]:
        """Per tensor group and (device, format), in the groups' order."""
        acc: dict[tuple[str, str, str], list] = defaultdict(lambda: [0, 0, set()])
        for t in self.tensors:
            a = acc[(t.group, t.device, t.format)]
            a[0] += 1
            a[1] += t.n_bytes
            if t.layer is not None:
                a[2].add(t.layer)
        rows = [GroupRow(g, d, f, n, b, tuple(sorted(ls))) for (g, d, f), (n, b, ls) in acc.items()]
        return sorted(rows, key=lambda r: (GROUP_ORDER.index(r.group), r.device != "cuda", r.format))

    # --- what to do when it does not fit ---------------------------------------------------

    def max_context(self, *, without_gpu_experts: bool = False) -> int:
        """The largest context (up to the model's) whose KV cache and work buffers fit beside
        this placement's weights (less the routed experts on the GPU, if asked); 0 when none does."""
        if not self.gpu:
            room, weights = self.memory.ram, self.weight_bytes("cpu")
        else:
            room, weights = self.vram_budget, self.weight_bytes("cuda")
            if without_gpu_experts:
                weights -= sum(self.gpu_expert_bytes().values())

        def fits(ctx: int) -> bool:
            return weights + self.kv_per_token * ctx + self.work.at(ctx) <= room

        lo, hi = 0, self.model_context  # fits(lo) or lo == 0; the need grows with the context
        if fits(hi):
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo if fits(lo) and lo > 0 else 0

    def advice(self) -> list[str]:
        """What to change so that the plan fits VRAM (empty when it does)."""
        if self.fits_vram:
            return []
        out = []
        short = self.vram_need - self.vram_budget
        if self.gpu_expert_bytes():
            n = self._n_cpu_moe_that_fits(short)
            if n is not None:
                out.append(f"--n-cpu-moe {n} (routed experts of layers 0-{n - 1} in RAM)")
                out.append("--cpu-moe (every routed expert in RAM), or narrower -ot rules for CUDA0")
            elif (ctx := _round_context(self.max_context(without_gpu_experts=True))) >= 1:
                out.append(f"--cpu-moe (every routed expert in RAM) with --ctx-size {ctx}")
        if (ctx := _round_context(self.max_context())) >= 1:
            out.append(f"--ctx-size {ctx} (now {self.context}; the KV cache takes {_gib(self.kv_bytes)})")
        if not out:
            weights = self.weight_bytes("cuda") - sum(self.gpu_expert_bytes().values())
            out.append(
                f"a GPU with at least {_gib(weights + self.work.fixed + self.reserve)} free "
                "(more for the context), or the CPU only (CUDA_VISIBLE_DEVICES=)"
            )
        return out

    def _n_cpu_moe_that_fits(self, short: int) -> int | None:
        """The smallest --n-cpu-moe N that moves enough of the GPU's routed experts (the lowest
        layers first) to RAM to free `short` bytes; None when all of them are not enough."""
        freed = 0
        for layer, n_bytes in self.gpu_expert_bytes().items():
            freed += n_bytes
            if freed >= short:
                return layer + 1
        return None

    def raise_if_unfit(self) -> None:
        """InsufficientMemoryError naming the shortfall and what to change, when VRAM is short.
        (RAM is not checked here: mmapped experts that do not fit the page cache are re-read
        from disk, slowly, but the model runs.)"""
        if self.fits_vram:
            return
        raise InsufficientMemoryError(
            f"the model does not fit the GPU: it needs {_gib(self.vram_need)} of VRAM "
            f"({_gib(self.weight_bytes('cuda'))} weights, {_gib(self.kv_bytes)} KV cache at {self.context} "
            f"tokens, {_gib(self.work_bytes)} work buffers) but {_gib(self.vram_budget)} is free "
            f"after a {_gib(self.reserve)} reserve ({self.memory.vram_source}): "
            f"{_gib(self.vram_need - self.vram_budget)} short. Change: " + "; or ".join(self.advice())
        )

    # --- text ------------------------------------------------------------------------------

    def table(self) -> list[str]:
        """Per tensor group and device: the format, tensors, MiB and layers; then the KV cache,
        the work buffers, the totals and whether it fits."""
        kv_dev = self.placement.compute_device
        rows = [
            (g.group, g.device, g.format, str(g.n_tensors), _mib(g.n_bytes), _layers(g.layers))
            for g in self.groups()
        ]
        if self.config.mla is not None:
            mla = self.config.mla
            kv_how = f"{self.config.n_layers} layers x ({mla.kv_lora_rank} + {mla.qk_rope_head_dim})"
        else:
            kv_how = f"{self.config.n_layers} layers x 2 x {self.config.n_kv_heads} x {self.config.head_dim}"
        per_elem = {"f16": 2, "bf16": 2, "f32": 4}[self.kv_dtype]
        rows.append(
            (
                "KV cache",
                kv_dev,
                self.kv_dtype,
                "",
                _mib(self.kv_bytes),
                f"{kv_how} x {per_elem} bytes = {self.kv_per_token:,} bytes/token x {self.context:,}",
            )
        )
        rows.append(
            (
                "work buffers",
                kv_dev,
                "",
                "",
                _mib(self.work_bytes),
                self._work_how(),
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
        if self.gpu:
            lines.append(
                f"VRAM  {_mib(self.vram_need)} MiB needed: {_mib(self.weight_bytes('cuda'))} weights + "
                f"{_mib(self.kv_bytes)} KV cache + {_mib(self.work_bytes)} work buffers; "
                f"{_mib(self.vram_budget)} MiB usable ({self.memory.vram_source}, less a "
                f"{_mib(self.reserve)} MiB reserve)"
            )
        else:
            lines.append(f"VRAM  none: no GPU ({self.memory.vram_source}); everything in RAM")
        lines.append(
            f"RAM   {_mib(self.ram_need)} MiB needed of {_mib(self.memory.ram)} MiB ({self.memory.ram_source})"
        )
        for note in (self.context_note, self.auto_fit):
            if note:
                lines.append(note)
        for r in self.user_rules:
            lines.append(f"rule  {r.source}: '{r.pattern}' -> {r.device}/{r.format}")
        if self.fits_vram and self.fits_ram:
            lines.append("fits: yes")
        elif not self.fits_vram:
            lines.append(
                f"fits: no, {_mib(self.vram_need - self.vram_budget)} MiB of VRAM short. Change: "
                + "; or ".join(self.advice())
            )
        else:
            lines.append(
                f"fits: VRAM yes; RAM {_mib(self.ram_need - self.memory.ram)} MiB short: the mmapped weights "
                "that do not fit the page cache are re-read from disk at every use (it runs, slowly); "
                "more RAM, or a smaller quantization"
            )
        return lines

    def _work_how(self) -> str:
        w, ctx = self.work, self.context
        how = f"{w.fixed / 2**20:,.1f} MiB + {w.per_context_token:,} bytes/token of context"
        if w.heads:
            from engine.layers.mla import expanded_heads

            group = expanded_heads(w.heads, ctx, w.expanded_values, w.act_bytes)
            how += (
                f" + MLA keys/values of {group} of {w.heads} heads at a time "
                f"({w.expanded_values} values x {w.act_bytes} bytes per head and token)"
            )
        return how


class InsufficientMemoryError(InvalidOptionError):
    """The placement and context ask for more VRAM than the GPU has free."""


def _layers(layers: tuple[int, ...]) -> str:
    """(3, 4, 5, 9) -> '3-5, 9'."""
    out: list[str] = []
    for i in layers:
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def _mib(n: int) -> str:
    return f"{n / MiB:,.1f}"


def _layer_count(layers: list[int]) -> str:
    """[58, 59, 60] -> 'MoE layers 58-60'; [60] -> 'MoE layer 60'."""
    lo, hi = min(layers), max(layers)
    return f"MoE layer {lo}" if lo == hi else f"{len(layers)} MoE layers {lo}-{hi}"


def _round_context(n: int) -> int:
    """A context to suggest: a multiple of 256 where that is not 0."""
    return n // 256 * 256 or n


def _gib(n: int) -> str:
    return f"{n / GiB:,.2f} GiB"


def _layer(name: str) -> int | None:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


# --- building the plan ----------------------------------------------------------------------


def plan_memory(
    gguf,
    config,
    *,
    rules: Sequence[PlacementRule] = (),
    memory: MachineMemory,
    context: int | None = None,
    kv_cache_dtype: str = "auto",
    reserve: int = VRAM_RESERVE,
    gpu_kernel_for=gpu_kernel,
    native: bool | None = None,
) -> MemoryPlan:
    """The placement and memory plan of an opened GGUF model (headers only).

    rules: the user's placement rules (engine.placement.user_rules), first match wins.
    memory: the machine (free VRAM, or None for the CPU only; RAM).
    context: tokens of KV cache to plan for; None: the model's own, lowered to what fits
    the GPU (at least MIN_CONTEXT) when it does not.
    Raises InvalidOptionError for a rule that cannot run (GPU asked, no GPU; a non-expert
    matrix in RAM beside a GPU). Does not raise when it does not fit: see raise_if_unfit.
    """
    from engine.kv_cache import KV_CACHE_DTYPES, cache_bytes_per_token, resolve_cache_dtype

    gpu = memory.vram is not None
    native = native_runs() if native is None else native
    user = list(rules)
    names = [t.name for t in gguf]
    base = Placement.preset(config, gpu=gpu, user=user)
    check_user_rules(base, names, gpu=gpu)

    device = base.compute_device
    kv_dtype = resolve_cache_dtype(kv_cache_dtype, device)
    elem = KV_CACHE_DTYPES[kv_dtype].itemsize
    per_token = cache_bytes_per_token(config, KV_CACHE_DTYPES[kv_dtype])
    work = work_buffers(config, act_bytes=4, cache_elem=elem)
    if context is not None and context < 1:
        raise InvalidOptionError(f"--ctx-size {context}: give a number of tokens >= 1")
    ctx = min(context, config.context_length) if context else config.context_length

    def build(placement: Placement, ctx: int) -> MemoryPlan:
        return MemoryPlan(
            config=config,
            placement=placement,
            tensors=_place_tensors(gguf, config, placement, gpu_kernel_for, native),
            context=ctx,
            kv_dtype=kv_dtype,
            kv_per_token=per_token,
            work=work,
            memory=memory,
            reserve=reserve,
            model_context=config.context_length,
            user_rules=user,
        )

    plan = build(base, ctx)
    _check_expert_devices(plan)
    if context is None and gpu and not plan.fits_vram:
        fit = _round_context(plan.max_context())
        if fit >= MIN_CONTEXT:
            plan.context = fit
            plan.context_note = (
                f"context lowered from the model's {config.context_length} to {fit} tokens to fit the GPU "
                "(--ctx-size sets it)"
            )
    if gpu and not user and config.moe is not None and plan.fits_vram:
        plan = _fit_experts(plan, build, gguf, config, gpu_kernel_for, native)
    return plan


def _check_expert_devices(plan: MemoryPlan) -> None:
    """A layer's routed experts (gate, up, down) are computed by one device: a rule that
    splits them is refused."""
    by_layer: dict[int, list[TensorPlan]] = defaultdict(list)
    for t in plan.tensors:
        if t.group == "routed experts" and t.layer is not None:
            by_layer[t.layer].append(t)
    for layer, ts in by_layer.items():
        if len({t.device for t in ts}) > 1:
            where = ", ".join(f"{t.name} on {t.device} ({t.source})" for t in ts)
            raise InvalidOptionError(
                f"the routed experts of layer {layer} are split between devices: {where}. "
                f"A layer's experts run on one device: make the rule match all of them, "
                f"e.g. -ot 'blk\\.{layer}\\.ffn_.*_exps=CUDA0'"
            )


def _place_tensors(gguf, config, placement: Placement, gpu_kernel_for, native: bool) -> list[TensorPlan]:
    out = []
    for t in gguf:
        out.append(_tensor_plan(t.name, t, placement, gpu_kernel_for, native))
    if config.tied_embeddings and "token_embd.weight" in gguf:
        # the output head is the embedding table a second time, placed as output.weight
        t = gguf.tensor("token_embd.weight")
        out.append(_tensor_plan("output.weight", t, placement, gpu_kernel_for, native, group="output"))
    return out


def _tensor_plan(name, info, placement, gpu_kernel_for, native, group=None) -> TensorPlan:
    rule = placement.rule_for(name)
    device, fmt = (rule.device, rule.format) if rule else (placement.compute_device, "f32")
    fmt = held_format(fmt, int(info.ggml_type), gpu_kernel_for=gpu_kernel_for, native=native)
    return TensorPlan(
        name=name,
        group=group or tensor_group(name),
        type_name=info.type_name,
        device=device,
        format=fmt,
        n_bytes=held_bytes(fmt, int(info.ggml_type), info.n_elements, info.n_bytes),
        source=rule.source if rule else "default",
        layer=_layer(name),
    )


def _fit_experts(plan: MemoryPlan, build, gguf, config, gpu_kernel_for, native) -> MemoryPlan:
    """Routed experts of the last MoE layers on the GPU while they fit the VRAM left over."""
    per_layer: dict[int, int] = defaultdict(int)
    no_kernel: set[str] = set()  # expert types the GPU would hold as bf16
    for t in gguf:
        layer = _layer(t.name)
        if layer is not None and re.search(EXPS_REGEX, t.name):
            fmt = held_format("gguf", int(t.ggml_type), gpu_kernel_for=gpu_kernel_for, native=native)
            per_layer[layer] += held_bytes(fmt, int(t.ggml_type), t.n_elements, t.n_bytes)
            if fmt == "bf16":
                no_kernel.add(t.type_name)
    why = f"; no GPU kernel for {', '.join(sorted(no_kernel))}: bf16 there" if no_kernel else ""
    left = plan.vram_budget - plan.vram_need
    chosen: list[int] = []
    for layer in sorted(per_layer, reverse=True):
        if per_layer[layer] > left:
            break
        left -= per_layer[layer]
        chosen.append(layer)
    if not chosen:
        plan.auto_fit = (
            f"auto-fit: routed experts stay in RAM ({_gib(left)} of VRAM left; "
            f"one layer's experts take {_gib(min(per_layer.values()))}{why})"
            if per_layer
            else ""
        )
        return plan
    first = min(chosen)
    fitted = [
        PlacementRule(rf"blk\.({'|'.join(map(str, sorted(chosen)))}){EXPS_REGEX}", "cuda", "gguf", "auto-fit")
    ]
    placement = Placement.preset(config, gpu=True, fitted=fitted)
    fitted_plan = build(placement, plan.context)
    fitted_plan.context_note = plan.context_note
    fitted_plan.auto_fit = (
        f"auto-fit: routed experts of {_layer_count(chosen)} "
        f"({_gib(sum(per_layer[i] for i in chosen))}) on the GPU, as --n-cpu-moe {first}; "
        f"{_gib(left)} of VRAM left"
    )
    return fitted_plan
