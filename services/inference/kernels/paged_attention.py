"""Paged sliding-window attention in Triton: a drop-in `AttentionBackend` for CUDA tensors.

`triton_paged_attention` has the signature and the semantics of `torch_paged_attention`
(attention.py): it first stores this step's K/V in the cache slots of `group.slot_mapping`, then
attends each query token at position p to its sequence's keys at positions in (p - window, p]
(window 0: [0, p]) that are below `context_lens` and sit in a live block (`block_tables` >= 0).

- Decode (`meta.max_q == 1`): one program per (query token, kv head, split); the query heads that
  share a kv head are processed together, so each K/V byte is read once per kv head. Only blocks
  inside the window are visited. At small batch the key range is split over several programs
  (flash-decoding) and merged by a second kernel; the split count comes from tensor shapes only.
  No host sync, no data-dependent shapes: the path can be captured in a CUDA graph.
- Prefill and mixed steps (`meta.max_q > 1`): the same Triton kernel with a tile of up to BLOCK_M
  query tokens of one sequence per program and the causal + window mask per row. The tiles are a
  [n, 3] table (sequence, first token, end token) built on the device from the tokens of each
  sequence (`prefill_tiles`): a step of one long prompt and many decodes launches one program per
  tile, not one per (sequence, longest prompt's tiles); padding tiles (first == end) do nothing,
  so a CUDA graph can hold a fixed tile count for a token bucket.

Differences from the reference, both deliberate: a token whose slot is negative writes nothing
(CUDA-graph padding rows may carry -1), and a query row that sees no key gets zeros (the reference
gives an average over padding). Triton is imported on first use, so this module imports anywhere.

Plugging in: pass `triton_paged_attention` as the decoder's backend where the KV cache lives on a
CUDA device and `triton_available()` is true; keep `torch_paged_attention` for the CPU. The cache
must be contiguous; q/k/v may be strided views (last dim contiguous). Figures: docs/perf.md.
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

from clawdbot.services.inference.attention import AttentionMetadata, GroupMetadata

LOG2E = 1.4426950408889634
# Decode settings (keys per inner step, warps), measured on the H100 (docs/perf.md): small steps
# (the key range split over programs) run best with short steps and 2 warps, large ones with
# 128 keys and 4 warps. DECODE_OVERRIDE (block_n, warps, stages) pins one, for the benchmark sweep.
DECODE_SMALL = (64, 2)
DECODE_LARGE = (128, 4)
DECODE_STAGES = 3
DECODE_OVERRIDE: tuple[int, int, int] | None = None
BLOCK_N_PREFILL = 64
PREFILL_ROWS = 64  # rows (query tokens x heads of one kv head) per prefill program
MIN_KEYS_PER_SPLIT = 128  # a split shorter than this costs more in merging than it gains
MAX_SPLITS = 32


@functools.cache
def triton_available() -> bool:
    """True where Triton imports and a CUDA device is present (the kernels' preconditions)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@functools.cache
def _kernels() -> ModuleType:
    from clawdbot.services.inference.kernels import _triton_attention

    return _triton_attention


@functools.cache
def _sm_count(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def prefill_tile_tokens(heads: int, kv_heads: int) -> int:
    """Query tokens per prefill program: PREFILL_ROWS rows of (token, query head of one kv head)."""
    return max(1, PREFILL_ROWS // _pow2(heads // kv_heads))


def tile_capacity(tokens: int, seqs: int, tile_tokens: int) -> int:
    """Most tiles `tokens` query tokens of `seqs` sequences can need (each sequence's last tile
    may be partial): the tile table's length for a step, or for a CUDA graph's token bucket."""
    return -(-tokens // tile_tokens) + min(seqs, tokens)


def prefill_tiles(query_lens: torch.Tensor, tile_tokens: int, capacity: int) -> torch.Tensor:
    """[capacity, 3] int64 rows (sequence, first token, end token) covering every query token once.

    `query_lens[b]` tokens of sequence b follow those of b - 1 in the flat order. Device ops only
    (no host sync, fixed shapes), so a CUDA graph can capture it; rows past the last tile are
    (last sequence, t, t): empty.
    """
    lens = query_lens.to(torch.long)
    counts = (lens + tile_tokens - 1) // tile_tokens
    tile_end = counts.cumsum(0)
    token_end = lens.cumsum(0)
    k = torch.arange(capacity, device=lens.device)
    seq = torch.searchsorted(tile_end, k, right=True).clamp_(max=max(int(lens.shape[0]) - 1, 0))
    first = token_end[seq] - lens[seq] + (k - (tile_end[seq] - counts[seq])) * tile_tokens
    end = torch.minimum(first + tile_tokens, token_end[seq])
    end = torch.where(k < tile_end[-1:], end, first)
    return torch.stack((seq, first, end), dim=1)


def decode_splits(programs: int, max_keys: int, sms: int) -> int:
    """How many programs share one (token, kv head)'s key range: enough programs to fill the
    chip about four times over, each with at least MIN_KEYS_PER_SPLIT keys (a power of two)."""
    want = max(1, -(-4 * sms // max(programs, 1)))
    by_length = max(1, max_keys // MIN_KEYS_PER_SPLIT)
    splits = min(want, by_length, MAX_SPLITS)
    return 1 << (splits.bit_length() - 1)


def decode_config(programs: int, sms: int) -> tuple[int, int, int]:
    """(keys per inner step, warps, pipeline stages) for a decode launch of `programs` (token, kv head)."""
    if DECODE_OVERRIDE is not None:
        return DECODE_OVERRIDE
    block_n, warps = DECODE_LARGE if programs >= 4 * sms else DECODE_SMALL
    return block_n, warps, DECODE_STAGES


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor
) -> None:
    """One launch for K and V of every token (the reference's `write_kv` is two index_copy_)."""
    tokens, kv_heads, dim = k.shape
    if tokens == 0:
        return
    _kernels()._store_kv_kernel[(tokens,)](
        k,
        v,
        k_cache,
        v_cache,
        slots,
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        k_cache.stride(1),
        k_cache.stride(2),
        KV_HEADS=kv_heads,
        HEAD_DIM=dim,
        BLOCK_H=_pow2(kv_heads),
        BLOCK_D=_pow2(dim),
    )


def triton_paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    group: GroupMetadata,
    scale: float,
) -> torch.Tensor:
    """`AttentionBackend` on Triton (see the module docstring); returns [T, heads, head_dim] in q's dtype."""
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("the KV cache must be contiguous [num_blocks, block_size, kv_heads, head_dim]")
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        k, v = k.contiguous(), v.contiguous()
    store_kv(k, v, k_cache, v_cache, group.slot_mapping)
    if q.stride(-1) != 1:
        q = q.contiguous()
    tokens, heads, dim = q.shape
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if tokens == 0:
        return out
    tables = group.block_tables
    num_cols = tables.shape[1]
    per_kv = heads // kv_heads
    group_p = _pow2(per_kv)
    block_d = max(16, _pow2(dim))
    fp32 = q.dtype == torch.float32
    common = {
        "GROUP": per_kv,
        "HEAD_DIM": dim,
        "BLOCK_D": block_d,
        "BLOCK_SIZE": block_size,
        "DOT_PRECISION": "ieee" if fp32 else "tf32",
    }
    decode = meta.max_q == 1
    if decode:
        sms = _sm_count(q.device.index or 0)
        splits = decode_splits(tokens * kv_heads, num_cols * block_size, sms)
        block_n, num_warps, num_stages = decode_config(tokens * kv_heads, sms)
        grid = (tokens, kv_heads, splits)
        launch = {
            "GROUP_P": max(16, group_p),
            "BLOCK_M": 1,
            "BLOCK_N": block_n,
            "NUM_SPLITS": splits,
            "ROWS_ARE_TOKENS": True,
        }
        tiles, order = meta.query_slot, None  # unused on this path
    else:
        splits = 1
        block_m = prefill_tile_tokens(heads, kv_heads)
        tiles, order = _tiles_of(meta, tokens, block_m)
        grid = (int(tiles.shape[0]), kv_heads, 1)
        launch = {
            "GROUP_P": group_p,
            "BLOCK_M": block_m,
            "BLOCK_N": BLOCK_N_PREFILL,
            "NUM_SPLITS": 1,
            "ROWS_ARE_TOKENS": False,
        }
        num_warps = 4 if block_d <= 64 else 8
        num_stages = 3
    if splits > 1:
        part_acc = torch.empty((tokens, heads, splits, block_d), dtype=torch.float32, device=q.device)
        part_ml = torch.empty((tokens, heads, splits, 2), dtype=torch.float32, device=q.device)
    else:
        part_acc = part_ml = out  # not touched when there is one split
    kernels = _kernels()
    kernels._paged_attention_kernel[grid](
        q,
        k_cache,
        v_cache,
        out,
        part_acc,
        part_ml,
        meta.positions,
        meta.query_slot,
        tiles,
        order if order is not None else tiles,
        meta.context_lens,
        tables,
        group.first_block,
        scale * LOG2E,
        group.window,
        num_cols,
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        tables.stride(0),
        num_warps=num_warps,
        num_stages=num_stages,
        REORDERED=order is not None,
        **common,
        **launch,
    )
    if splits > 1:
        kernels._combine_kernel[(tokens, heads)](
            part_acc,
            part_ml,
            out,
            out.stride(0),
            out.stride(1),
            HEADS=heads,
            HEAD_DIM=dim,
            BLOCK_D=block_d,
            NUM_SPLITS=splits,
        )
    return out


def _tiles_of(
    meta: AttentionMetadata, tokens: int, tile_tokens: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(tiles, token order) of a prefill step: the runner's tiles over the flat order when it made
    them, else derived from `query_slot` (any token order): the tokens sorted by their padded row,
    which groups them by sequence, and the tiles over that order."""
    if meta.tiles is not None:
        return meta.tiles, None
    lens = meta.query_lens
    if lens is None:
        seq_of = meta.query_slot // meta.max_q
        lens = torch.zeros(meta.num_seqs, dtype=torch.long, device=seq_of.device)
        lens.scatter_add_(0, seq_of, torch.ones_like(seq_of))
    order = torch.argsort(meta.query_slot, stable=True)
    return prefill_tiles(lens, tile_tokens, tile_capacity(tokens, meta.num_seqs, tile_tokens)), order
