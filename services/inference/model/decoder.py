"""The decoder: embeddings, layers, final norm, lm_head. One call = one batched forward of a step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from clawdbot.services.inference.attention import AttentionBackend, AttentionMetadata, torch_paged_attention
from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.kernels.fused import add_rms_norm, rms_norm
from clawdbot.services.inference.model.layers import DecoderLayer, RMSNorm
from clawdbot.services.inference.model.rope import RotaryEmbedding


def kv_groups(config: ModelConfig) -> list[int]:
    """Distinct window sizes in layer order of first use; a layer's group is its window's index."""
    windows: list[int] = []
    for window in config.layer_windows:
        if window not in windows:
            windows.append(window)
    return windows


class Decoder(nn.Module):
    """Llama / Mistral / Qwen2 decoder over a flat token batch and a paged KV cache."""

    layer_class: type[nn.Module] = DecoderLayer
    norm_class: type[RMSNorm] = RMSNorm

    def __init__(self, config: ModelConfig, backend: AttentionBackend = torch_paged_attention) -> None:
        super().__init__()
        self.config = config
        self.backend = backend
        self.fused = False  # Triton norm/RoPE/SiLU kernels (set by gpu.accelerate on CUDA devices)
        groups = kv_groups(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            self.layer_class(config, groups.index(window)) for window in config.layer_windows
        )
        self.norm = self.norm_class(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.build_rope()

    def build_rope(self) -> None:
        """The RoPE tables (computed, never loaded: the loader calls this again after `to_empty`)."""
        config = self.config
        self.rotary = RotaryEmbedding(config.rope, config.head_dim, config.max_position_embeddings)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_caches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        rope_seq_lens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states [T, hidden] after the final norm; `kv_caches[i]` is layer i's (k, v) cache."""
        cos, sin = self.rotary(positions, rope_seq_lens)
        x = self.embed_tokens(input_ids)
        if self.fused:
            residual: torch.Tensor | None = None
            for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
                x, residual = cast(DecoderLayer, layer).forward_fused(
                    x, residual, cos, sin, meta, kv_cache, self.backend
                )
            if residual is None:
                return rms_norm(x, self.norm.weight, self.norm.eps)
            return add_rms_norm(x, residual, self.norm.weight, self.norm.eps)[0]
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, cos, sin, meta, kv_cache, self.backend)
        return self.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits [N, vocab] (sampling and logprobs want full precision)."""
        return self.lm_head(hidden).float()
