# mypy: disable-error-code="no-untyped-def"
"""The Triton kernels behind `paged_attention.py` (imported lazily: only where Triton runs).

Kernel parameters carry no annotations beyond `tl.constexpr` (Triton reads annotations), hence
the file-level mypy switch above.

One attention kernel serves both step kinds:
- decode (`ROWS_ARE_TOKENS`): a program per (query token, kv head, split); its rows are the
  query heads that share the kv head, padded to 16 for `tl.dot`;
- prefill / mixed (`not ROWS_ARE_TOKENS`): a program per (tile, kv head), a tile being a row
  (sequence, first, end) of `tiles_ptr`: up to BLOCK_M consecutive query tokens of one sequence in
  the flat order (or in `order_ptr`'s order when REORDERED); its rows are those tokens x the query
  heads of the kv head. Empty tiles (first == end) are padding and do nothing.
Each program walks the keys in its range in chunks of BLOCK_N positions, maps every position to
its physical block through the block table (skipping -1 entries), masks causal + window, and keeps
an online softmax in fp32 (base 2, the scale folded in). Decode may split the key range over
several programs (flash-decoding) and combine the partial results in `_combine_kernel`.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _store_kv_kernel(
    k_ptr,
    v_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_ptr,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_cs,  # cache stride between slots (block_size * slot = one flat slot)
    stride_ch,
    KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """K and V of one token into its slot, all kv heads at once; a negative slot writes nothing."""
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    mask = (h[:, None] < KV_HEADS) & (d[None, :] < HEAD_DIM) & (slot >= 0)
    src_k = k_ptr + t * stride_kt + h[:, None] * stride_kh + d[None, :]
    src_v = v_ptr + t * stride_vt + h[:, None] * stride_vh + d[None, :]
    dst = slot * stride_cs + h[:, None] * stride_ch + d[None, :]
    k = tl.load(src_k, mask=mask)
    v = tl.load(src_v, mask=mask)
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _paged_attention_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    out_ptr,
    part_acc_ptr,
    part_ml_ptr,
    positions_ptr,
    query_slot_ptr,
    tiles_ptr,
    order_ptr,
    context_lens_ptr,
    block_tables_ptr,
    first_block_ptr,
    scale_log2,
    window,
    num_cols,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    stride_cb,
    stride_cs,
    stride_ch,
    stride_tb,
    GROUP: tl.constexpr,
    GROUP_P: tl.constexpr,
    BLOCK_M: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    ROWS_ARE_TOKENS: tl.constexpr,
    REORDERED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    ROWS: tl.constexpr = BLOCK_M * GROUP_P
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    m = tl.arange(0, ROWS)
    g = m % GROUP_P
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM

    if ROWS_ARE_TOKENS:
        tok = tl.program_id(0) + tl.zeros([ROWS], dtype=tl.int32)
        b = tl.load(query_slot_ptr + tl.program_id(0))  # max_q is 1: the slot is the sequence
        row_ok = g < GROUP
    else:
        tile = tiles_ptr + tl.program_id(0).to(tl.int64) * 3
        b = tl.load(tile)
        idx = tl.load(tile + 1) + m // GROUP_P
        in_tile = idx < tl.load(tile + 2)
        if REORDERED:  # noqa: SIM108 (a constexpr branch: one side is compiled)
            tok = tl.load(order_ptr + idx, mask=in_tile, other=0)
        else:
            tok = idx
        row_ok = in_tile & (g < GROUP)
    b = b.to(tl.int64)
    tok = tl.where(row_ok, tok, 0).to(tl.int64)
    pos = tl.load(positions_ptr + tok, mask=row_ok, other=-1)
    head = kvh * GROUP + g

    q = tl.load(
        q_ptr + tok[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :],
        mask=row_ok[:, None] & d_ok[None, :],
        other=0.0,
    )

    # Key range of this program: the union of its rows' (pos - window, pos], inside the table.
    ctx = tl.load(context_lens_ptr + b)
    first = tl.load(first_block_ptr + b)
    big = 1 << 40
    pos_lo = tl.min(tl.where(row_ok, pos, big), axis=0)
    pos_hi = tl.max(tl.where(row_ok, pos, -1), axis=0)
    lo = first * BLOCK_SIZE
    if window > 0:
        lo = tl.maximum(lo, pos_lo - window + 1)
    lo = tl.maximum(lo, 0)
    hi = tl.minimum(tl.minimum(pos_hi + 1, ctx), (first + num_cols) * BLOCK_SIZE)
    if NUM_SPLITS > 1:
        span = tl.maximum(hi - lo, 0)
        per = tl.cdiv(tl.cdiv(span, NUM_SPLITS), BLOCK_N) * BLOCK_N
        lo = lo + split * per
        hi = tl.minimum(hi, lo + per)

    m_i = tl.full([ROWS], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([ROWS], dtype=tl.float32)
    acc = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)
    n = tl.arange(0, BLOCK_N)
    table_row = block_tables_ptr + b * stride_tb
    for start in range(lo, hi, BLOCK_N):
        kp = start + n
        col = kp // BLOCK_SIZE - first
        in_range = (kp < hi) & (col >= 0) & (col < num_cols)
        phys = tl.load(table_row + col, mask=in_range, other=-1)
        k_ok = in_range & (phys >= 0)
        off = phys.to(tl.int64) * stride_cb + (kp % BLOCK_SIZE) * stride_cs + kvh * stride_ch
        kv_mask = k_ok[:, None] & d_ok[None, :]
        k = tl.load(k_cache_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_cache_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=DOT_PRECISION) * scale_log2
        ok = k_ok[None, :] & (kp[None, :] <= pos[:, None])
        if window > 0:
            ok = ok & (kp[None, :] > pos[:, None] - window)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype), input_precision=DOT_PRECISION)
        m_i = m_new

    if NUM_SPLITS == 1:
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(
            out_ptr + tok[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=row_ok[:, None] & d_ok[None, :],
        )
    else:
        # partials are [T, heads, NUM_SPLITS, BLOCK_D] and [T, heads, NUM_SPLITS, 2] (m, l), fp32
        base = (tok * (tl.num_programs(1) * GROUP) + head) * NUM_SPLITS + split
        tl.store(part_acc_ptr + base[:, None] * BLOCK_D + d[None, :], acc, mask=row_ok[:, None])
        tl.store(part_ml_ptr + base * 2, m_i, mask=row_ok)
        tl.store(part_ml_ptr + base * 2 + 1, l_i, mask=row_ok)


@triton.jit
def _combine_kernel(
    part_acc_ptr,
    part_ml_ptr,
    out_ptr,
    stride_ot,
    stride_oh,
    HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
):
    """Merge the split partial softmaxes of one (token, head) into its output row."""
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    s = tl.arange(0, NUM_SPLITS)
    d = tl.arange(0, BLOCK_D)
    base = (t * HEADS + h) * NUM_SPLITS + s
    m_s = tl.load(part_ml_ptr + base * 2)
    l_s = tl.load(part_ml_ptr + base * 2 + 1)
    acc = tl.load(part_acc_ptr + base[:, None] * BLOCK_D + d[None, :])
    m_max = tl.max(m_s, axis=0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp2(m_s - m_max)
    total = tl.sum(w * l_s, axis=0)
    out = tl.sum(w[:, None] * acc, axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + t * stride_ot + h * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d < HEAD_DIM)
