# mypy: disable-error-code="no-untyped-def"
"""Fused Triton kernels for the elementwise parts of a decoder layer.

At small batch a decode step is launch-bound: the torch RMSNorm is ~7 kernels, `apply_rope` ~7 per
tensor, SiLU * up 2, each residual add 1. Here each of those is one launch (RoPE: one for q and k
together, residual add folded into the following norm), with the torch code's rounding kept:

- `add_rms_norm` / `rms_norm`: the add and the product with the weight round to the activation
  dtype as the torch ops do, the norm is fp32 and cast back before the weight (`RMSNorm.forward`).
  The new residual is bitwise the torch sum; the normed output differs only by the reduction order
  and the hardware rsqrt (at most an ulp or two of the output dtype).
- `rope_qk_`: cos/sin cast to the activation dtype first and every product and the sum rounded to
  it, as `apply_rope`'s ops round (no FMA contraction): bitwise the reference in every dtype.
- `silu_mul`: SiLU in fp32 rounded to the dtype, then the product rounded (`F.silu(gate) * up`):
  differs only where the exp differs from torch's (an ulp of the dtype at most).

Every launch configuration comes from shapes only, outputs are fresh `torch.empty` (RoPE writes in
place) and nothing syncs with the host, so all of it can be captured in a CUDA graph (call each
shape once before capture: the first call compiles). Triton is imported on first use (the kernels
live in `_kernels()`), so the module imports anywhere; CPU tensors run under TRITON_INTERPRET=1.
Use where `triton_available()` is true.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch

MAX_HIDDEN = 16384  # a row is one register tile; wider rows would spill


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _warps(elements: int) -> int:
    """Warps for a one-program tile: 4 up to 2K elements, then 8 and 16 (the usual steps for norms)."""
    return 4 if elements < 2048 else 8 if elements < 8192 else 16


@functools.cache
def _kernels() -> SimpleNamespace:
    """The jitted kernels, built on first use so that importing this module needs no Triton."""
    import triton
    import triton.language as tl

    @triton.jit
    def rms_norm_kernel(
        x_ptr,
        res_ptr,
        w_ptr,
        out_ptr,
        res_out_ptr,
        stride_x,
        stride_r,
        n_cols,
        eps,
        HAS_RESIDUAL: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """One row: optional residual add (rounded to the dtype), fp32 norm, cast, times the weight."""
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
        if HAS_RESIDUAL:
            r = tl.load(res_ptr + row * stride_r + cols, mask=mask, other=0.0)
            x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
            tl.store(res_out_ptr + row * n_cols + cols, x, mask=mask)
        h = x.to(tl.float32)
        rstd = tl.rsqrt(tl.sum(h * h, axis=0) / n_cols + eps)
        normed = (h * rstd).to(x.dtype).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * n_cols + cols, (w * normed).to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def rope_kernel(
        q_ptr,
        k_ptr,
        cos_ptr,
        sin_ptr,
        stride_qt,
        stride_qh,
        stride_kt,
        stride_kh,
        stride_ct,
        stride_st,
        Q_HEADS: tl.constexpr,
        K_HEADS: tl.constexpr,
        HALF: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_HALF: tl.constexpr,
    ):
        """One token, its q and k heads as the rows of one tile: cos/sin are read once for all."""
        t = tl.program_id(0).to(tl.int64)
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_HALF)[None, :]
        is_q = h < Q_HEADS
        mask = (h < Q_HEADS + K_HEADS) & (d < HALF)
        q_row = q_ptr + t * stride_qt + h * stride_qh
        k_row = k_ptr + t * stride_kt + (h - Q_HEADS) * stride_kh
        lo = tl.where(is_q, q_row, k_row) + d
        x1 = tl.load(lo, mask=mask, other=0.0)
        x2 = tl.load(lo + HALF, mask=mask, other=0.0)
        dtype = x1.dtype
        # Both halves of cos/sin are read (not assumed equal), cast to the activation dtype first,
        # and every product and the sum rounded to it: the rounding of `apply_rope`'s torch ops.
        dmask = d < HALF
        cos = cos_ptr + t * stride_ct + d
        sin = sin_ptr + t * stride_st + d
        c1 = tl.load(cos, mask=dmask, other=0.0).to(dtype).to(tl.float32)
        c2 = tl.load(cos + HALF, mask=dmask, other=0.0).to(dtype).to(tl.float32)
        s1 = tl.load(sin, mask=dmask, other=0.0).to(dtype).to(tl.float32)
        s2 = tl.load(sin + HALF, mask=dmask, other=0.0).to(dtype).to(tl.float32)
        f1 = x1.to(tl.float32)
        f2 = x2.to(tl.float32)
        out1 = (f1 * c1).to(dtype).to(tl.float32) + (-f2 * s1).to(dtype).to(tl.float32)
        out2 = (f2 * c2).to(dtype).to(tl.float32) + (f1 * s2).to(dtype).to(tl.float32)
        tl.store(lo, out1.to(dtype), mask=mask)
        tl.store(lo + HALF, out2.to(dtype), mask=mask)

    @triton.jit
    def silu_mul_kernel(gate_up_ptr, out_ptr, stride_gu, n_cols, BLOCK: tl.constexpr):
        """One column block of one row: silu(gate) rounded to the dtype, times up, rounded."""
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < n_cols
        src = gate_up_ptr + row * stride_gu + cols
        gate = tl.load(src, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(src + n_cols, mask=mask, other=0.0)
        silu = (gate / (1.0 + tl.exp(-gate))).to(up.dtype).to(tl.float32)
        tl.store(out_ptr + row * n_cols + cols, (silu * up.to(tl.float32)).to(up.dtype), mask=mask)

    return SimpleNamespace(rms_norm=rms_norm_kernel, rope=rope_kernel, silu_mul=silu_mul_kernel)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x as [rows, last dim] with a unit column stride (a view where possible)."""
    rows = x.reshape(-1, x.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def _norm(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    res_out: torch.Tensor | None,
) -> torch.Tensor:
    """The normed rows; with `residual`, x + residual goes to `res_out` and is what gets normed."""
    hidden = x.shape[-1]
    if hidden > MAX_HIDDEN:
        raise ValueError(f"hidden size {hidden} is above the fused norm's limit {MAX_HIDDEN}")
    if weight.shape != (hidden,):
        raise ValueError(f"weight of shape {tuple(weight.shape)} for rows of {hidden}")
    # The torch code's `weight * hidden.to(x.dtype)` promotes: so does the output here.
    out = torch.empty(x.shape, dtype=torch.promote_types(weight.dtype, x.dtype), device=x.device)
    x2 = _rows(x)
    if x2.shape[0] == 0:
        return out
    r2 = x2 if residual is None else _rows(residual)
    block = _pow2(hidden)
    _kernels().rms_norm[(x2.shape[0],)](
        x2,
        r2,
        weight.contiguous(),
        out,
        out if res_out is None else res_out,
        x2.stride(0),
        r2.stride(0),
        hidden,
        eps,
        HAS_RESIDUAL=residual is not None,
        BLOCK=block,
        num_warps=_warps(block),
    )
    return out


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`RMSNorm.forward` in one launch (x [..., hidden])."""
    return _norm(x, None, weight, eps, None)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual), x + residual) in one launch: the residual add of the previous block
    folded into this norm, which saves a launch and a round trip of the sum through memory."""
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError("residual must have x's shape and dtype")
    new_residual = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return _norm(x, residual, weight, eps, new_residual), new_residual


def rope_qk_(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """`apply_rope` on q [T, Hq, D] and k [T, Hk, D] in place, one launch for both.

    q and k may be strided views (of the fused qkv output, say) but need a unit last-dim stride:
    writing in place leaves no room for a contiguous copy. cos/sin are [T, D]."""
    tokens, q_heads, dim = q.shape
    k_heads = k.shape[1]
    if k.shape != (tokens, k_heads, dim) or cos.shape != (tokens, dim) or sin.shape != (tokens, dim):
        raise ValueError(f"shapes q {tuple(q.shape)}, k {tuple(k.shape)}, cos/sin {tuple(cos.shape)}")
    if dim % 2 or q.dtype != k.dtype:
        raise ValueError("q and k need one dtype and an even head_dim")
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        raise ValueError("q and k need a unit stride along head_dim to be rotated in place")
    if tokens == 0:
        return
    cos = cos if cos.stride(-1) == 1 else cos.contiguous()
    sin = sin if sin.stride(-1) == 1 else sin.contiguous()
    half = dim // 2
    block_half = _pow2(half)
    block_h = _pow2(q_heads + k_heads)
    _kernels().rope[(tokens,)](
        q,
        k,
        cos,
        sin,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        cos.stride(0),
        sin.stride(0),
        Q_HEADS=q_heads,
        K_HEADS=k_heads,
        HALF=half,
        BLOCK_H=block_h,
        BLOCK_HALF=block_half,
        num_warps=_warps(block_h * block_half),
        # Contracting a product into the add (FMA) would skip a rounding the torch ops make.
        enable_fp_fusion=False,
    )


def silu_mul(gate_up: torch.Tensor, intermediate: int) -> torch.Tensor:
    """`F.silu(gate) * up` for `gate, up = gate_up.split(intermediate, -1)`, in one launch."""
    if gate_up.shape[-1] != 2 * intermediate:
        raise ValueError(f"gate_up's last dim {gate_up.shape[-1]} is not 2 * {intermediate}")
    out = torch.empty((*gate_up.shape[:-1], intermediate), dtype=gate_up.dtype, device=gate_up.device)
    rows = _rows(gate_up)
    if rows.shape[0] == 0 or intermediate == 0:
        return out
    block = min(_pow2(intermediate), 1024)
    _kernels().silu_mul[(rows.shape[0], -(-intermediate // block))](
        rows, out, rows.stride(0), intermediate, BLOCK=block, num_warps=4
    )
    return out
