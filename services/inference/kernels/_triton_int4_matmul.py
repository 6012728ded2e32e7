# mypy: disable-error-code="no-untyped-def"
"""The Triton kernel behind `int4_matmul.py` (imported lazily: only where Triton runs).

Kernel parameters carry no annotations beyond `tl.constexpr` (Triton reads annotations), hence
the file-level mypy switch above.

One kernel, two inner products chosen by BLOCK_M:
- BLOCK_M >= 16: `tl.dot` of an x tile [BLOCK_M, BLOCK_K] with the dequantized weight tile
  (converted to x's dtype), fp32 accumulator; programs ordered in GROUP_M bands of rows so the
  weight tiles a band shares are still in L2;
- BLOCK_M < 16 (GEMV): the weight tile is dequantized to fp32 once and multiplied with each of the
  BLOCK_M rows on the CUDA cores (a tensor-core tile would be mostly padding), reduced per step.

Weights are the module's `qweight` bytes read as int32 words [N, K/8]: nibble i of word j of a row
is column 8j + i. A step loads [BLOCK_N, BLOCK_K/8] words and expands them to codes
[8, BLOCK_N, BLOCK_K/8], the nibble axis first: Triton spreads threads over the last axes, so each
thread keeps the 8 codes of the words it loaded. (With the nibble axis last, the sm_90 build
spread them over 8 threads: a layout conversion per step and shuffles in the GEMV's sums.)
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _int4_matmul_kernel(
    x_ptr,
    w_ptr,
    s_ptr,
    z_ptr,
    y_ptr,
    M,
    N,
    stride_xm,
    K: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """y[M, N] = x[M, K] @ W^T with W[n, k] = code * scale[k // GROUP, n] + zero[k // GROUP, n]."""
    WORDS: tl.constexpr = BLOCK_K // 8
    EVEN_K: tl.constexpr = K % BLOCK_K == 0
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    band = GROUP_M * num_n
    first_m = (pid // band) * GROUP_M
    band_rows = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % band) % band_rows
    pid_n = (pid % band) // band_rows

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < M
    col_mask = cols < N
    x_rows = x_ptr + rows.to(tl.int64) * stride_xm
    word_idx = tl.arange(0, WORDS)
    nibble = tl.arange(0, 8)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        words_k = k0 // 8 + word_idx
        w_mask = col_mask[:, None]
        if not EVEN_K:
            w_mask = w_mask & (words_k < K // 8)[None, :]
        words = tl.load(w_ptr + cols[:, None] * (K // 8) + words_k[None, :], mask=w_mask, other=0)
        if BLOCK_K <= GROUP:  # the whole step lies in one group: one scale per column
            g_off = (k0 // GROUP) * N + cols
            scale = tl.load(s_ptr + g_off, mask=col_mask, other=0.0).to(tl.float32)[None, :, None]
            zero = tl.load(z_ptr + g_off, mask=col_mask, other=0.0).to(tl.float32)[None, :, None]
        else:  # several groups per step: a scale per word (GROUP is a multiple of 8)
            g_off = ((k0 + 8 * word_idx) // GROUP)[None, :] * N + cols[:, None]
            scale = tl.load(s_ptr + g_off, mask=w_mask, other=0.0).to(tl.float32)[None, :, :]
            zero = tl.load(z_ptr + g_off, mask=w_mask, other=0.0).to(tl.float32)[None, :, :]
        # The code's bits in the mantissa of 128.0 make the float 128 + code exactly (an integer
        # to float conversion runs at a quarter of the FP32 rate); the 128 is taken off the zero.
        codes = ((words[None, :, :] >> (4 * nibble)[:, None, None]) & 0xF) << 16
        weight = (codes | 0x43000000).to(tl.float32, bitcast=True) * scale + (zero - 128.0 * scale)
        if BLOCK_M >= 16:
            k_idx = k0 + tl.arange(0, BLOCK_K)
            x_mask = row_mask[:, None]
            if not EVEN_K:
                x_mask = x_mask & (k_idx < K)[None, :]
            x = tl.load(x_rows[:, None] + k_idx[None, :], mask=x_mask, other=0.0)
            tile = tl.reshape(tl.permute(weight, (2, 0, 1)), (BLOCK_K, BLOCK_N)).to(x.dtype)
            acc = tl.dot(x, tile, acc)
        else:
            k_idx = k0 + nibble[:, None] + 8 * word_idx[None, :]  # [8, WORDS], the weight's order
            for m in tl.static_range(BLOCK_M):
                x_mask = (pid_m * BLOCK_M + m) < M
                if not EVEN_K:
                    x_mask = x_mask & (k_idx < K)
                x = tl.load(
                    x_ptr + (pid_m * BLOCK_M + m).to(tl.int64) * stride_xm + k_idx, mask=x_mask, other=0.0
                )
                part = tl.sum(tl.sum(weight * x.to(tl.float32)[:, None, :], axis=0), axis=1)
                acc = tl.where((tl.arange(0, BLOCK_M) == m)[:, None], acc + part[None, :], acc)
    y = y_ptr + rows.to(tl.int64)[:, None] * N + cols[None, :]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def _int4_dequantize_kernel(
    w_ptr,
    scales_ptr,
    zeros_ptr,
    out_ptr,
    N,
    K: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[n, k] = code(n, k) * scale[k // GROUP, n] + zero[k // GROUP, n], in fp32, stored in out's dtype."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rn[:, None] < N) & (rk[None, :] < K)
    words = tl.load(w_ptr + rn[:, None] * (K // 8) + rk[None, :] // 8, mask=mask, other=0)
    codes = (words >> ((rk[None, :] % 8) * 4)) & 0xF
    group = rk[None, :] // GROUP
    scale = tl.load(scales_ptr + group * N + rn[:, None], mask=mask, other=0.0).to(tl.float32)
    zero = tl.load(zeros_ptr + group * N + rn[:, None], mask=mask, other=0.0).to(tl.float32)
    value = codes.to(tl.float32) * scale + zero
    tl.store(out_ptr + rn[:, None] * K + rk[None, :], value.to(out_ptr.dtype.element_ty), mask=mask)
