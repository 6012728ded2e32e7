"""Rotary position embeddings with the scaling variants Llama-family configs carry.

Computed exactly as `transformers` does (float32 frequencies, `cat(freqs, freqs)`, rotate-half),
so fp32 logits agree to rounding. Dynamic NTK scaling depends on the sequence's current length,
so its frequencies are per token, from the length of the sequence the token belongs to.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clawdbot.services.inference.config import RopeConfig


def base_inv_freq(theta: float | torch.Tensor, dim: int) -> torch.Tensor:
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    if isinstance(theta, torch.Tensor):
        return 1.0 / (theta[:, None] ** exponents[None, :].to(theta.device))
    return 1.0 / (theta**exponents)


def llama3_inv_freq(rope: RopeConfig, dim: int) -> torch.Tensor:
    inv_freq = base_inv_freq(rope.theta, dim)
    low_wavelen = rope.original_max_position_embeddings / rope.low_freq_factor
    high_wavelen = rope.original_max_position_embeddings / rope.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq)
    smooth = (rope.original_max_position_embeddings / wavelen - rope.low_freq_factor) / (
        rope.high_freq_factor - rope.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for a flat batch of positions."""

    inv_freq: torch.Tensor

    def __init__(self, rope: RopeConfig, head_dim: int, max_position_embeddings: int) -> None:
        super().__init__()
        self.rope = rope
        self.dim = head_dim
        self.max_positions = max_position_embeddings
        if rope.kind == "llama3":
            inv_freq = llama3_inv_freq(rope, head_dim)
        elif rope.kind == "linear":
            inv_freq = base_inv_freq(rope.theta, head_dim) / rope.factor
        else:
            inv_freq = base_inv_freq(rope.theta, head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(
        self, positions: torch.Tensor, seq_lens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [T, head_dim]; `seq_lens` [T] (length of each token's sequence) for dynamic NTK."""
        pos = positions.float()[:, None]
        if self.rope.kind == "dynamic" and seq_lens is not None:
            length = seq_lens.clamp(min=self.max_positions).double()
            factor = self.rope.factor
            theta = self.rope.theta * ((factor * length / self.max_positions) - (factor - 1)) ** (
                self.dim / (self.dim - 2)
            )
            inv_freq = base_inv_freq(theta.float(), self.dim).to(positions.device)
            freqs = pos * inv_freq
        else:
            freqs = pos * self.inv_freq[None, :].to(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, dim]; cos/sin [T, dim]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None, :].to(x.dtype) + rotated * sin[:, None, :].to(x.dtype)
