"""The building blocks of one decoder layer: RMSNorm, the SwiGLU MLP, attention with GQA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clawdbot.services.inference.attention import AttentionBackend, AttentionMetadata
from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.kernels.fused import add_rms_norm, rms_norm, rope_qk_, silu_mul
from clawdbot.services.inference.model.rope import apply_rope


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 and scale after casting back, as the reference does.
        hidden = x.float()
        hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * hidden.to(x.dtype)


class MLP(nn.Module):
    """SwiGLU with gate and up fused into one matmul."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.intermediate = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        if fused:
            return self.down_proj(silu_mul(self.gate_up_proj(x), self.intermediate))
        gate, up = self.gate_up_proj(x).split(self.intermediate, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Attention(nn.Module):
    """QKV in one matmul, RoPE, paged attention through the backend, output projection."""

    def __init__(self, config: ModelConfig, group: int) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.group = group  # index of this layer's KV group (its window size) in the step metadata
        self.scale = config.head_dim**-0.5
        self.q_size = config.num_heads * config.head_dim
        self.kv_size = config.num_kv_heads * config.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=config.o_bias)

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
        q = q.view(tokens, self.num_heads, self.head_dim)
        k = k.view(tokens, self.num_kv_heads, self.head_dim)
        if fused:
            rope_qk_(q, k, cos, sin)  # in place, on views of the qkv output: one launch for both
        else:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        v = v.view(tokens, self.num_kv_heads, self.head_dim)
        out = backend(q, k, v, kv_cache[0], kv_cache[1], meta, meta.groups[self.group], self.scale)
        return self.o_proj(out.reshape(tokens, self.q_size))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, group: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, group)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        meta: AttentionMetadata,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        backend: AttentionBackend,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, meta, kv_cache, backend)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_fused(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
        meta: AttentionMetadata,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        backend: AttentionBackend,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same layer with Triton kernels (CUDA): the residual add rides in the next norm.

        Takes the previous layer's MLP output `x` not yet added to the `residual` stream (None at the
        first layer) and returns this layer's MLP output and the stream, so each add + RMSNorm
        pair is one launch; RoPE and SiLU*up are one launch each.
        """
        norm = self.input_layernorm
        if residual is None:
            residual, hidden = x, rms_norm(x, norm.weight, norm.eps)
        else:
            hidden, residual = add_rms_norm(x, residual, norm.weight, norm.eps)
        attn = self.self_attn(hidden, cos, sin, meta, kv_cache, backend, fused=True)
        norm = self.post_attention_layernorm
        hidden, residual = add_rms_norm(attn, residual, norm.weight, norm.eps)
        return self.mlp(hidden, fused=True), residual
