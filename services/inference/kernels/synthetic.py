"""Random paged-attention steps for the kernel tests and `bench/attention.py`.

A step is built the way the model runner builds one: each sequence's block table starts at the
first block its earliest query still sees (optionally preceded by freed -1 columns), physical
blocks are scattered over the pool, and every slot of the pool holds random data, so stale keys
outside a window or in a freed block would show up in the output if they were not masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clawdbot.services.inference.attention import AttentionMetadata, GroupMetadata


@dataclass
class PagedStep:
    q: torch.Tensor  # [T, heads, dim]
    k: torch.Tensor  # [T, kv_heads, dim]
    v: torch.Tensor
    k_cache: torch.Tensor  # [num_blocks, block_size, kv_heads, dim]
    v_cache: torch.Tensor
    meta: AttentionMetadata
    group: GroupMetadata
    scale: float

    def decode_kv_bytes(self) -> int:
        """K/V bytes a decode step must read at least: each sequence's last min(context, window) keys."""
        per_key = 2 * self.k_cache.shape[2] * self.k_cache.shape[3] * self.k_cache.element_size()
        ctx = self.meta.context_lens
        if self.group.window > 0:
            ctx = ctx.clamp(max=self.group.window)
        return int(ctx.sum()) * per_key


def random_step(
    context_lens: list[int],
    query_lens: list[int],
    *,
    heads: int,
    kv_heads: int,
    head_dim: int,
    window: int = 0,
    block_size: int = 16,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cuda",
    freed_columns: int = 0,
    shuffle_tokens: bool = False,
    table_width: int | None = None,
    num_blocks: int | None = None,
    seed: int = 0,
) -> PagedStep:
    """One step where sequence b ends at `context_lens[b]` tokens and `query_lens[b]` of them are new.

    `freed_columns` puts that many -1 columns in front of every table that has blocks to spare
    (blocks that slid out of the window); `shuffle_tokens` permutes the flat token order, so the
    kernel must find each token's sequence through `query_slot`.
    """
    gen = torch.Generator().manual_seed(seed)
    bs = block_size
    firsts: list[int] = []
    tables: list[list[int]] = []
    next_block = 0
    for ctx, n in zip(context_lens, query_lens, strict=True):
        first_pos = ctx - n
        needed = max(0, first_pos - window + 1) // bs if window > 0 else 0
        first = max(0, needed - freed_columns)
        count = -(-ctx // bs) - first
        table = [-1] * (needed - first) + list(range(next_block, next_block + count - (needed - first)))
        next_block += count - (needed - first)
        firsts.append(first)
        tables.append(table)
    width = max(len(t) for t in tables) if table_width is None else table_width
    pool = next_block + 3 if num_blocks is None else num_blocks
    if pool < next_block or any(len(t) > width for t in tables):
        raise ValueError("num_blocks / table_width too small for these contexts")
    perm = torch.randperm(pool, generator=gen)
    padded = [[int(perm[x]) if x >= 0 else -1 for x in t] + [-1] * (width - len(t)) for t in tables]

    positions: list[int] = []
    query_slot: list[int] = []
    rows: list[int] = []
    max_q = max(query_lens)
    for b, (ctx, n) in enumerate(zip(context_lens, query_lens, strict=True)):
        positions.extend(range(ctx - n, ctx))
        query_slot.extend(b * max_q + i for i in range(n))
        rows.extend([b] * n)
    order = torch.randperm(len(positions), generator=gen) if shuffle_tokens else torch.arange(len(positions))
    pos = torch.tensor(positions)[order]
    slot_q = torch.tensor(query_slot)[order]
    row = torch.tensor(rows)[order]
    table_t = torch.tensor(padded, dtype=torch.long).view(len(context_lens), width)
    first_t = torch.tensor(firsts, dtype=torch.long)
    slots = table_t[row, pos // bs - first_t[row]] * bs + pos % bs

    tokens = len(positions)

    device_gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=device_gen, device=device).to(dtype)

    meta = AttentionMetadata(
        positions=pos.to(device),
        query_slot=slot_q.to(device),
        context_lens=torch.tensor(context_lens, dtype=torch.long, device=device),
        max_q=max_q,
        groups=[],
    )
    group = GroupMetadata(
        window=window,
        slot_mapping=slots.to(device),
        block_tables=table_t.to(device),
        first_block=first_t.to(device),
    )
    meta.groups.append(group)
    return PagedStep(
        q=randn(tokens, heads, head_dim),
        k=randn(tokens, kv_heads, head_dim),
        v=randn(tokens, kv_heads, head_dim),
        k_cache=randn(pool, bs, kv_heads, head_dim),
        v_cache=randn(pool, bs, kv_heads, head_dim),
        meta=meta,
        group=group,
        scale=head_dim**-0.5,
    )
