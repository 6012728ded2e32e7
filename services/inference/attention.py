"""Attention over the paged KV cache: the metadata one engine step hands to every layer, and the
torch reference backend.

The backend is the one seam a faster kernel (FlexAttention, Triton, a CUDA-graph-friendly decode
kernel) replaces: it receives a flat batch of query tokens, writes their keys/values into the
cache slots the block manager chose, and attends over each sequence's blocks, masking the causal
limit and the layer's sliding window. Nothing here loops over sequences in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


@dataclass
class GroupMetadata:
    """Where one KV group's (one window size's) blocks are, for every sequence of the step.

    `block_tables[b, j]` is the physical block holding logical block `first_block[b] + j` of
    sequence b, or -1 (padding, or a block that slid out of the window and went back to the pool).
    """

    window: int  # 0 = full attention
    slot_mapping: torch.Tensor  # [T] flat cache slot each new token's K/V goes to
    block_tables: torch.Tensor  # [B, nb] int64
    first_block: torch.Tensor  # [B] int64


@dataclass
class AttentionMetadata:
    """The flat token batch of one step: which sequence each token belongs to, and where."""

    positions: torch.Tensor  # [T] absolute position of each query token
    query_slot: torch.Tensor  # [T] row in the padded [B * max_q] query layout
    context_lens: torch.Tensor  # [B] tokens with K/V in the cache once this step has written its own
    max_q: int
    groups: list[GroupMetadata]
    # Optional, for kernels that walk prompt tokens in tiles (the Triton prefill path): tokens of each
    # sequence in this step [B], and the tiles themselves [n, 3] = (sequence, first, end) over the
    # flat token order. The model runner fills both once a step (and the prefill graphs capture
    # them); a kernel derives them from `query_slot` when they are absent.
    query_lens: torch.Tensor | None = None
    tiles: torch.Tensor | None = None

    @property
    def num_seqs(self) -> int:
        return int(self.context_lens.shape[0])


class AttentionBackend(Protocol):
    """One layer's attention over the paged cache (q, k, v are [T, heads, head_dim])."""

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        group: GroupMetadata,
        scale: float,
    ) -> torch.Tensor: ...


def write_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor
) -> None:
    """Store this step's keys/values in their slots (cache is [num_blocks, block_size, kv_heads, dim])."""
    kv_heads, dim = k_cache.shape[-2:]
    k_cache.view(-1, kv_heads, dim).index_copy_(0, slots, k.to(k_cache.dtype))
    v_cache.view(-1, kv_heads, dim).index_copy_(0, slots, v.to(v_cache.dtype))


def torch_paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    group: GroupMetadata,
    scale: float,
) -> torch.Tensor:
    """Reference backend: gather each sequence's live blocks, pad queries per sequence, one SDPA call."""
    write_kv(k, v, k_cache, v_cache, group.slot_mapping)
    heads, dim = q.shape[1], q.shape[2]
    batch, max_q = meta.num_seqs, meta.max_q
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    tables = group.block_tables
    nb = tables.shape[1]
    keys = k_cache[tables.clamp(min=0)].reshape(batch, nb * block_size, kv_heads, dim)
    values = v_cache[tables.clamp(min=0)].reshape(batch, nb * block_size, kv_heads, dim)
    offsets = torch.arange(nb * block_size, device=q.device)
    key_pos = group.first_block[:, None] * block_size + offsets[None, :]  # [B, L]
    key_ok = (tables >= 0).repeat_interleave(block_size, dim=1) & (key_pos < meta.context_lens[:, None])

    padded_q = q.new_zeros(batch * max_q, heads, dim)
    padded_q[meta.query_slot] = q
    q_pos = torch.full((batch * max_q,), -1, dtype=torch.long, device=q.device)
    q_pos[meta.query_slot] = meta.positions
    q_pos = q_pos.view(batch, max_q, 1)
    mask = key_ok[:, None, :] & (key_pos[:, None, :] <= q_pos)
    if group.window > 0:
        mask &= key_pos[:, None, :] > q_pos - group.window
    mask |= q_pos < 0  # padding rows attend to everything: finite, and thrown away below

    out = F.scaled_dot_product_attention(
        padded_q.view(batch, max_q, heads, dim).transpose(1, 2),
        keys.transpose(1, 2).to(q.dtype),
        values.transpose(1, 2).to(q.dtype),
        attn_mask=mask[:, None, :, :],
        scale=scale,
        enable_gqa=kv_heads != heads,
    )
    return out.transpose(1, 2).reshape(batch * max_q, heads, dim)[meta.query_slot]
