"""Gemma 3: what its decoder does differently from the Llama family, as subclasses of our layers.

Computed as transformers' `Gemma3ForCausalLM` does, so fp32 logits agree to rounding:

- embeddings times sqrt(hidden_size), the factor rounded to the activation dtype first;
- RMSNorm scales by (1 + w) in fp32 and casts after (Llama's casts, then scales by w);
- four norms a layer: input, post-attention (before the residual add), pre- and post-feedforward;
- q_norm / k_norm over each head (same (1 + w) norm) before RoPE, and query_pre_attn_scalar**-0.5
  as the attention scale;
- GeGLU MLP (gelu_pytorch_tanh(gate) * up), gate and up fused as for SwiGLU;
- sliding layers (five of six) use their own RoPE base (`rope_local_base_freq`), the global ones
  `rope_theta` with its scaling (linear x8 for the larger models);
- final logit soft-capping when the config sets it (None for Gemma 3; Gemma 2 had 30).

The paged attention backend, the KV groups, quantization and the runner are shared with the other
families. On CUDA the decoder keeps its torch norms and MLP activation (the fused Triton norm rounds
before the weight, Llama's way, and the fused SiLU kernel is SiLU's) and uses only the fused RoPE
kernel, which is bitwise the torch one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from clawdbot.services.inference.attention import AttentionBackend, AttentionMetadata
from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.kernels.fused import rope_qk_
from clawdbot.services.inference.model.decoder import Decoder
from clawdbot.services.inference.model.layers import MLP, Attention, RMSNorm
from clawdbot.services.inference.model.rope import RotaryEmbedding, apply_rope


class GemmaRMSNorm(RMSNorm):
    """RMSNorm scaled by (1 + weight), all in fp32, cast at the end (Gemma3RMSNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = x.float()
        hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.eps)
        return (hidden * (1.0 + self.weight.float())).to(x.dtype)


class GemmaMLP(MLP):
    """GeGLU: gelu_pytorch_tanh(gate) * up, gate and up in one matmul."""

    def forward(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.intermediate, dim=-1)
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


class GemmaAttention(Attention):
    """QK-norm before RoPE, and the query_pre_attn_scalar scale."""

    def __init__(self, config: ModelConfig, group: int) -> None:
        super().__init__(config, group)
        self.scale = config.attention_scale
        self.q_norm = GemmaRMSNorm(config.head_dim, config.rms_norm_eps)
        self.k_norm = GemmaRMSNorm(config.head_dim, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        meta: AttentionMetadata,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        backend: AttentionBackend,
        fused: bool = False,
    ) -> torch.Tensor:
        tokens = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = self.q_norm(q.reshape(tokens, self.num_heads, self.head_dim))
        k = self.k_norm(k.reshape(tokens, self.num_kv_heads, self.head_dim))
        if fused:
            rope_qk_(q, k, cos, sin)
        else:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        v = v.reshape(tokens, self.num_kv_heads, self.head_dim)
        out = backend(q, k, v, kv_cache[0], kv_cache[1], meta, meta.groups[self.group], self.scale)
        return self.o_proj(out.reshape(tokens, self.q_size))


class GemmaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, group: int) -> None:
        super().__init__()
        eps = config.rms_norm_eps
        self.input_layernorm = GemmaRMSNorm(config.hidden_size, eps)
        self.self_attn = GemmaAttention(config, group)
        self.post_attention_layernorm = GemmaRMSNorm(config.hidden_size, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(config.hidden_size, eps)
        self.mlp = GemmaMLP(config)
        self.post_feedforward_layernorm = GemmaRMSNorm(config.hidden_size, eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        meta: AttentionMetadata,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        backend: AttentionBackend,
        fused: bool = False,
    ) -> torch.Tensor:
        attn = self.self_attn(self.input_layernorm(x), cos, sin, meta, kv_cache, backend, fused)
        x = x + self.post_attention_layernorm(attn)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class GemmaDecoder(Decoder):
    """Gemma 3 text decoder; `compute_logits` soft-caps when the config asks."""

    layer_class = GemmaDecoderLayer
    norm_class = GemmaRMSNorm

    def __init__(self, config: ModelConfig, *args: object, **kwargs: object) -> None:
        super().__init__(config, *args, **kwargs)  # type: ignore[arg-type]
        # Which RoPE table each layer reads: 1 (local) for sliding layers when they have their own.
        local = config.local_rope is not None
        self.rope_index = [int(local and window > 0) for window in config.layer_windows]
        self._embed_scale: dict[torch.dtype, float] = {}

    def build_rope(self) -> None:
        super().build_rope()
        config = self.config
        local = config.local_rope or config.rope
        self.rotary_local = RotaryEmbedding(local, config.head_dim, config.max_position_embeddings)

    def embed_scale(self, dtype: torch.dtype) -> float:
        """sqrt(hidden_size) rounded to the activation dtype, as transformers multiplies by it."""
        if dtype not in self._embed_scale:
            self._embed_scale[dtype] = float(torch.tensor(self.config.hidden_size**0.5).to(dtype))
        return self._embed_scale[dtype]

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_caches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        rope_seq_lens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ropes = [self.rotary(positions, rope_seq_lens), self.rotary_local(positions, rope_seq_lens)]
        x = self.embed_tokens(input_ids)
        x = x * self.embed_scale(x.dtype)
        for layer, kv_cache, index in zip(self.layers, kv_caches, self.rope_index, strict=True):
            cos, sin = ropes[index]
            x = cast(GemmaDecoderLayer, layer)(x, cos, sin, meta, kv_cache, self.backend, self.fused)
        return cast(torch.Tensor, self.norm(x))

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden).float()
        cap = self.config.final_logit_softcapping
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits
