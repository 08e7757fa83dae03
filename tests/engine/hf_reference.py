"""Hugging Face transformers models loaded with a GGUF file's dequantized weights.

The reader here is gguf-py's GGUFReader and gguf.quants.dequantize (not our own
reader), and the name mapping is the inverse of llama.cpp's converter.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers as T
from gguf import GGUFReader
from gguf.quants import dequantize

from engine.config import GatingFunc, MLALayout, ModelConfig


def gguf_tensors(path) -> dict[str, torch.Tensor]:
    reader = GGUFReader(path)
    out = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        values = dequantize(t.data, t.tensor_type).reshape(shape)
        out[t.name] = torch.from_numpy(np.array(values, dtype=np.float32))
    return out


def _unpermute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    out, inp = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)


def _rope_parameters(c: ModelConfig) -> dict:
    s = c.rope_scaling
    if s.type == "yarn" and s.factor > 1:
        return {
            "rope_type": "yarn",
            "rope_theta": c.rope_theta,
            "factor": s.factor,
            "original_max_position_embeddings": s.original_context_length,
            "beta_fast": s.yarn_beta_fast,
            "beta_slow": s.yarn_beta_slow,
            # llama.cpp stores only mscale_all_dim; it is equal to mscale in DeepSeek's configs
            "mscale": s.mscale_all_dim,
            "mscale_all_dim": s.mscale_all_dim,
        }
    return {"rope_type": "default", "rope_theta": c.rope_theta}


def _common(c: ModelConfig) -> dict:
    return dict(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads,
        rms_norm_eps=c.rms_norm_eps,
        max_position_embeddings=c.context_length,
        tie_word_embeddings=c.tied_embeddings,
        rope_parameters=_rope_parameters(c),
    )


def hf_model(path, c: ModelConfig, rope_parameters: dict | None = None) -> torch.nn.Module:
    """The transformers model for config `c`, with the weights of the GGUF at `path`;
    rope_parameters replace those derived from `c` (for scalings a GGUF keeps in tensors)."""
    w = gguf_tensors(path)
    w.pop("rope_freqs.weight", None)  # transformers derives these from rope_parameters
    sd: dict[str, torch.Tensor] = {"model.embed_tokens.weight": w["token_embd.weight"]}
    sd["model.norm.weight"] = w["output_norm.weight"]
    sd["lm_head.weight"] = w["token_embd.weight" if c.tied_embeddings else "output.weight"]
    arch = c.architecture
    for i in range(c.n_layers):
        p, h = f"blk.{i}.", f"model.layers.{i}."
        sd[h + "input_layernorm.weight"] = w[p + "attn_norm.weight"]
        sd[h + "post_attention_layernorm.weight"] = w[p + "ffn_norm.weight"]
        a = h + "self_attn."
        if arch == "deepseek2":
            m = c.mla
            if m.q_lora_rank:
                sd[a + "q_a_proj.weight"] = w[p + "attn_q_a.weight"]
                sd[a + "q_a_layernorm.weight"] = w[p + "attn_q_a_norm.weight"]
                sd[a + "q_b_proj.weight"] = w[p + "attn_q_b.weight"]
            else:
                sd[a + "q_proj.weight"] = w[p + "attn_q.weight"]
            sd[a + "kv_a_proj_with_mqa.weight"] = w[p + "attn_kv_a_mqa.weight"]
            sd[a + "kv_a_layernorm.weight"] = w[p + "attn_kv_a_norm.weight"]
            if m.layout is MLALayout.K_B_V_B:
                k_b = w[p + "attn_k_b.weight"].reshape(c.n_heads, m.kv_lora_rank, m.qk_nope_head_dim)
                v_b = w[p + "attn_v_b.weight"].reshape(c.n_heads, m.v_head_dim, m.kv_lora_rank)
                kv_b = torch.cat([k_b.transpose(1, 2), v_b], dim=1).reshape(-1, m.kv_lora_rank)
            else:
                kv_b = w[p + "attn_kv_b.weight"]
            sd[a + "kv_b_proj.weight"] = kv_b
        else:
            q, k = w[p + "attn_q.weight"], w[p + "attn_k.weight"]
            if arch == "llama":
                q, k = _unpermute(q, c.n_heads), _unpermute(k, c.n_kv_heads)
            sd[a + "q_proj.weight"], sd[a + "k_proj.weight"] = q, k
            sd[a + "v_proj.weight"] = w[p + "attn_v.weight"]
            for x in ("q", "k", "v"):
                if p + f"attn_{x}.bias" in w:
                    sd[a + f"{x}_proj.bias"] = w[p + f"attn_{x}.bias"]
            if c.qk_norm:
                sd[a + "q_norm.weight"] = w[p + "attn_q_norm.weight"]
                sd[a + "k_norm.weight"] = w[p + "attn_k_norm.weight"]
        sd[a + "o_proj.weight"] = w[p + "attn_output.weight"]
        f = h + "mlp."
        if p + "ffn_gate_exps.weight" in w:
            sd[f + "gate.weight"] = w[p + "ffn_gate_inp.weight"]
            if p + "exp_probs_b.bias" in w:
                sd[f + "gate.e_score_correction_bias"] = w[p + "exp_probs_b.bias"]
            sd[f + "experts.gate_up_proj"] = torch.cat(
                [w[p + "ffn_gate_exps.weight"], w[p + "ffn_up_exps.weight"]], 1
            )
            sd[f + "experts.down_proj"] = w[p + "ffn_down_exps.weight"]
            if p + "ffn_up_shexp.weight" in w:
                shared = "shared_expert" if arch == "qwen2moe" else "shared_experts"
                for x in ("gate", "up", "down"):
                    sd[f + f"{shared}.{x}_proj.weight"] = w[p + f"ffn_{x}_shexp.weight"]
            if p + "ffn_gate_inp_shexp.weight" in w:
                sd[f + "shared_expert_gate.weight"] = w[p + "ffn_gate_inp_shexp.weight"].reshape(1, -1)
        else:
            for x in ("gate", "up", "down"):
                sd[f + f"{x}_proj.weight"] = w[p + f"ffn_{x}.weight"]

    if arch == "deepseek2":
        m, moe = c.mla, c.moe
        kw = dict(
            _common(c),
            intermediate_size=c.ffn_dim,
            moe_intermediate_size=moe.expert_ffn_dim,
            num_key_value_heads=c.n_heads,
            n_shared_experts=moe.n_shared_experts,
            n_routed_experts=moe.n_experts,
            num_experts_per_tok=moe.n_experts_used,
            n_group=moe.n_groups,
            topk_group=moe.n_groups_used,
            first_k_dense_replace=moe.leading_dense_blocks,
            q_lora_rank=m.q_lora_rank or None,
            kv_lora_rank=m.kv_lora_rank,
            qk_nope_head_dim=m.qk_nope_head_dim,
            qk_rope_head_dim=m.qk_rope_head_dim,
            v_head_dim=m.v_head_dim,
            routed_scaling_factor=moe.weights_scale,
        )
        if moe.gating is GatingFunc.SIGMOID:
            cfg = T.DeepseekV3Config(**kw, norm_topk_prob=moe.weights_norm)
            cls = T.DeepseekV3ForCausalLM
        else:
            topk = "group_limited_greedy" if moe.n_groups > 1 else "greedy"
            cfg = T.DeepseekV2Config(**kw, topk_method=topk)
            cls = T.DeepseekV2ForCausalLM
    elif arch == "qwen3moe":
        cfg = T.Qwen3MoeConfig(
            **_common(c),
            num_key_value_heads=c.n_kv_heads,
            head_dim=c.head_dim,
            moe_intermediate_size=c.moe.expert_ffn_dim,
            num_experts=c.moe.n_experts,
            num_experts_per_tok=c.moe.n_experts_used,
            norm_topk_prob=True,
        )
        cls = T.Qwen3MoeForCausalLM
    elif arch == "qwen2moe":
        cfg = T.Qwen2MoeConfig(
            **_common(c),
            num_key_value_heads=c.n_kv_heads,
            moe_intermediate_size=c.moe.expert_ffn_dim,
            shared_expert_intermediate_size=c.moe.shared_ffn_dim,
            num_experts=c.moe.n_experts,
            num_experts_per_tok=c.moe.n_experts_used,
            norm_topk_prob=False,
        )
        cls = T.Qwen2MoeForCausalLM
    elif arch == "llama":
        cfg = T.LlamaConfig(
            **_common(c), num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim, intermediate_size=c.ffn_dim
        )
        cls = T.LlamaForCausalLM
    else:
        raise ValueError(arch)
    if rope_parameters is not None:
        cfg.rope_parameters = rope_parameters
    cfg._attn_implementation = "eager"
    model = cls(cfg).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k]
    assert not missing and not unexpected, (missing, unexpected)
    return model


@torch.inference_mode()
def hf_logits(model, ids: list[int]) -> torch.Tensor:
    return model(torch.tensor([ids])).logits[0].float()
