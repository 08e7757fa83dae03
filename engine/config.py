"""ModelConfig from GGUF metadata alone: no separate Hugging Face config folder.

Keys are read as llama.cpp's converter writes them (`{arch}.block_count`, ...).
DeepSeek files come in two MLA layouts: older ones carry `attn_kv_b` with
key_length = qk_nope + qk_rope; newer ones split it into `attn_k_b`/`attn_v_b`,
store key_length = kv_lora_rank + qk_rope ("MQA" view) and put the per-head
sizes in `key_length_mla`/`value_length_mla`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.errors import GGUFError, UnsupportedModelError
from engine.gguf_file import GGUFModel

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen2moe", "qwen3moe", "deepseek2")


class GatingFunc(StrEnum):
    """How router logits become expert weights (llama.cpp's expert_gating_func)."""

    SOFTMAX = "softmax"  # 1, and the default when the key is absent
    SIGMOID = "sigmoid"  # 2: DeepSeek-V3/R1


_GATING_BY_ID = {1: GatingFunc.SOFTMAX, 2: GatingFunc.SIGMOID}


class MLALayout(StrEnum):
    KV_B = "kv_b"  # one attn_kv_b matrix per layer (older files)
    K_B_V_B = "k_b+v_b"  # attn_k_b and attn_v_b (newer llama.cpp converter)


@dataclass(frozen=True)
class RopeScaling:
    """Context extension. For YaRN, DeepSeek's mscale_all_dim is stored by
    llama.cpp as yarn_log_multiplier = 0.1 * mscale_all_dim."""

    type: str = "none"  # none | linear | yarn
    factor: float = 1.0
    original_context_length: int = 0
    yarn_log_multiplier: float = 0.0
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0

    @property
    def mscale_all_dim(self) -> float:
        return self.yarn_log_multiplier / 0.1 if self.yarn_log_multiplier else 0.0


@dataclass(frozen=True)
class MoEConfig:
    n_experts: int
    n_experts_used: int
    expert_ffn_dim: int
    n_shared_experts: int = 0
    shared_ffn_dim: int = 0  # qwen2moe's shared expert has its own width
    leading_dense_blocks: int = 0
    gating: GatingFunc = GatingFunc.SOFTMAX
    weights_scale: float = 1.0  # routed_scaling_factor
    weights_norm: bool = False  # norm_topk_prob
    n_groups: int = 1
    n_groups_used: int = 1
    has_probs_bias: bool = False  # exp_probs_b (V3 e_score_correction_bias)
    has_shared_gate: bool = False  # qwen2moe ffn_gate_inp_shexp


@dataclass(frozen=True)
class MLAConfig:
    q_lora_rank: int  # 0: no q compression (V2-Lite)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    layout: MLALayout


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    name: str
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int  # dense FFN width (0 when every layer is MoE)
    vocab_size: int
    context_length: int
    rms_norm_eps: float
    rope_theta: float
    rope_dim: int
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    moe: MoEConfig | None = None
    mla: MLAConfig | None = None
    tied_embeddings: bool = False
    qk_norm: bool = False  # qwen3: RMSNorm on q and k per head
    attention_bias: bool = False  # qwen2: biases on q/k/v

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    def is_moe_layer(self, layer: int) -> bool:
        return self.moe is not None and layer >= self.moe.leading_dense_blocks

    @property
    def variant(self) -> str:
        """A human name for the flavour, e.g. 'deepseek2 (V3/R1-style)'."""
        if self.architecture != "deepseek2" or self.moe is None or self.mla is None:
            return self.architecture
        if self.moe.gating is GatingFunc.SIGMOID:
            return "deepseek2 (V3/R1-style)"
        return "deepseek2 (V2-Lite-style)" if self.mla.q_lora_rank == 0 else "deepseek2 (V2-style)"


class _Meta:
    """Typed access to `{arch}.*` keys with errors that name the file and key."""

    def __init__(self, model: GGUFModel, arch: str):
        self.model = model
        self.arch = arch

    def get(self, key: str, default: Any = None) -> Any:
        return self.model.get(f"{self.arch}.{key}", default)

    def int(self, key: str, default: int | None = None) -> int:
        value = self.get(key, default)
        if value is None:
            raise GGUFError(
                f"{self.model.path}: metadata key '{self.arch}.{key}' is missing; "
                "the file was not written by a llama.cpp-compatible converter."
            )
        if isinstance(value, list | tuple) or hasattr(value, "shape"):
            values = {int(v) for v in value}
            if len(values) != 1:
                raise UnsupportedModelError(
                    f"{self.model.path}: '{self.arch}.{key}' differs per layer; moebox needs one value."
                )
            value = values.pop()
        return int(value)

    def float(self, key: str, default: float) -> float:
        return float(self.get(key, default))


def model_config(model: GGUFModel) -> ModelConfig:
    """Build the ModelConfig for an opened GGUF model."""
    arch = model.architecture
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{model.path}: architecture {arch or '(none)'!r} is not supported; "
            f"moebox runs: {', '.join(SUPPORTED_ARCHITECTURES)}."
        )
    m = _Meta(model, arch)
    hidden = m.int("embedding_length")
    n_heads = m.int("attention.head_count")
    tokens = model.get("tokenizer.ggml.tokens")
    vocab = m.int("vocab_size", len(tokens) if tokens is not None else None)
    head_dim = m.int("attention.key_length", hidden // n_heads)

    scaling_type = str(m.get("rope.scaling.type", "none"))
    rope_scaling = RopeScaling(
        type=scaling_type,
        factor=m.float("rope.scaling.factor", 1.0),
        original_context_length=m.int("rope.scaling.original_context_length", 0),
        yarn_log_multiplier=m.float("rope.scaling.yarn_log_multiplier", 0.0),
        yarn_beta_fast=m.float("rope.scaling.yarn_beta_fast", 32.0),
        yarn_beta_slow=m.float("rope.scaling.yarn_beta_slow", 1.0),
    )

    moe = _moe_config(model, m) if m.get("expert_count") else None
    mla = _mla_config(model, m, head_dim) if arch == "deepseek2" else None
    rope_dim = mla.qk_rope_head_dim if mla else m.int("rope.dimension_count", head_dim)

    return ModelConfig(
        architecture=arch,
        name=str(model.get("general.name", model.path.stem)),
        n_layers=m.int("block_count"),
        hidden_size=hidden,
        n_heads=n_heads,
        n_kv_heads=m.int("attention.head_count_kv", n_heads),
        head_dim=head_dim,
        ffn_dim=m.int("feed_forward_length", 0),
        vocab_size=vocab,
        context_length=m.int("context_length"),
        rms_norm_eps=m.float("attention.layer_norm_rms_epsilon", 1e-6),
        rope_theta=m.float("rope.freq_base", 10000.0),
        rope_dim=rope_dim,
        rope_scaling=rope_scaling,
        moe=moe,
        mla=mla,
        tied_embeddings="output.weight" not in model,
        qk_norm="blk.0.attn_q_norm.weight" in model,
        attention_bias="blk.0.attn_q.bias" in model,
    )


def _moe_config(model: GGUFModel, m: _Meta) -> MoEConfig:
    gating_id = m.int("expert_gating_func", 1)
    if gating_id not in _GATING_BY_ID:
        raise UnsupportedModelError(
            f"{model.path}: expert_gating_func {gating_id} is not supported (1 softmax, 2 sigmoid)."
        )
    n_shared = m.int("expert_shared_count", 0)
    has_shared_tensors = "blk.{}.ffn_up_shexp.weight".format(m.int("leading_dense_block_count", 0)) in model
    if has_shared_tensors and n_shared == 0:
        n_shared = 1  # qwen2moe writes the shared expert's width, not a count
    return MoEConfig(
        n_experts=m.int("expert_count"),
        n_experts_used=m.int("expert_used_count"),
        expert_ffn_dim=m.int("expert_feed_forward_length"),
        n_shared_experts=n_shared,
        shared_ffn_dim=m.int("expert_shared_feed_forward_length", 0),
        leading_dense_blocks=m.int("leading_dense_block_count", 0),
        gating=_GATING_BY_ID[gating_id],
        weights_scale=m.float("expert_weights_scale", 1.0),
        weights_norm=bool(m.get("expert_weights_norm", False)),
        n_groups=m.int("expert_group_count", 1),
        n_groups_used=m.int("expert_group_used_count", 1),
        has_probs_bias=any(t.name.endswith(".exp_probs_b.bias") for t in model),
        has_shared_gate=any(t.name.endswith(".ffn_gate_inp_shexp.weight") for t in model),
    )


def _mla_config(model: GGUFModel, m: _Meta, key_length: int) -> MLAConfig:
    rope = m.int("rope.dimension_count")
    kv_lora = m.int("attention.kv_lora_rank")
    first = m.int("leading_dense_block_count", 0)
    if f"blk.{first}.attn_k_b.weight" in model or "blk.0.attn_k_b.weight" in model:
        layout = MLALayout.K_B_V_B
        key_mla = m.int("attention.key_length_mla")
        value_mla = m.int("attention.value_length_mla")
    elif "blk.0.attn_kv_b.weight" in model:
        layout = MLALayout.KV_B
        key_mla = m.int("attention.key_length_mla", key_length)
        value_mla = m.int("attention.value_length_mla", m.int("attention.value_length"))
    else:
        raise UnsupportedModelError(
            f"{model.path}: a deepseek2 file needs blk.N.attn_kv_b or attn_k_b/attn_v_b tensors; found neither."
        )
    return MLAConfig(
        q_lora_rank=m.int("attention.q_lora_rank", 0),
        kv_lora_rank=kv_lora,
        qk_nope_head_dim=key_mla - rope,
        qk_rope_head_dim=rope,
        v_head_dim=value_mla,
        layout=layout,
    )
