"""W4A16 matmul in Triton for the INT4 format of quant.py: y = x @ W^T at any batch size.

`pack_int4_for_triton` runs once at load time; `int4_matmul(x2d, packed)` is then the layer's
matmul, for bf16 or fp16 x (fp32 callers cast in and out). The tile configuration depends only on
(M, N, K), there is no host sync and nothing allocated besides the output, so a call can be
captured in a CUDA graph.

Layout (`Int4Packed`):
- weights stay K-major: the module's `qweight` [N, K/2] uint8 read as int32 words [N, K/8], a view
  sharing its storage (no second copy of the weights). Each output column's K codes are
  contiguous, so a program's rows stream as full 128-byte lines at every tile shape, and the
  8 codes of a word are 8 consecutive K positions, which the kernel expands without shuffles;
- scales and zeros are transposed to [K/group, N]: a K step loads the scales of BLOCK_N adjacent
  columns in one contiguous run instead of BLOCK_N strided ones. They keep their stored 16-bit
  dtype (fp16 scales cast to bf16 would lose 3 bits) and are widened to fp32 in the kernel.

Tiles (M rows of x): M <= GEMV_MAX_M uses the GEMV form (CUDA cores, weight tile dequantized
once per step in fp32, long K steps so a program's whole slice of W is in flight at once, narrow
column blocks so N alone gives a few programs per SM); larger M uses `tl.dot` tiles that grow
with M (the weight tile is dequantized in registers, converted to x's dtype and fed to the tensor
cores). All settings are first guesses for the H100, to be confirmed by `bench/int4_matmul.py`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType
from typing import NamedTuple

import torch

GEMV_MAX_M = 4  # above this, dequantizing once for a 16-row tensor-core tile beats M CUDA-core passes
GROUP_M = 8  # row tiles per band of the program order (L2 reuse of the weight tiles)


@dataclass(frozen=True)
class Int4Packed:
    """An INT4 weight laid out for `int4_matmul` (see the module docstring)."""

    words: torch.Tensor  # int32 [N, K/8]: nibble i of word j is column 8j + i
    scales: torch.Tensor  # [K/group, N], fp16 or bf16
    zeros: torch.Tensor  # [K/group, N], same dtype
    group_size: int

    @property
    def out_features(self) -> int:
        return self.words.shape[0]

    @property
    def in_features(self) -> int:
        return self.words.shape[1] * 8


class TileConfig(NamedTuple):
    block_m: int
    block_n: int
    block_k: int
    warps: int
    stages: int


@functools.cache
def _kernels() -> ModuleType:
    from clawdbot.services.inference.kernels import _triton_int4_matmul

    return _triton_int4_matmul


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def int4_matmul_supported(in_features: int, group_size: int) -> bool:
    """Whether the kernel takes this layer: a power-of-two group of at least 16 (a `tl.dot` K
    step) dividing the row. `effective_group_size` may give other groups for odd shapes."""
    return group_size >= 16 and group_size & (group_size - 1) == 0 and in_features % group_size == 0


def pack_int4_for_triton(
    qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int
) -> Int4Packed:
    """The kernel's layout of quant.py's (qweight [N, K/2] uint8, scales, zeros [N, K/group])."""
    in_features = qweight.shape[1] * 2
    if not int4_matmul_supported(in_features, group_size):
        raise ValueError(f"the Triton INT4 kernel needs a power-of-two group >= 16, got {group_size}")
    if scales.shape != (qweight.shape[0], in_features // group_size) or zeros.shape != scales.shape:
        raise ValueError(f"scales {tuple(scales.shape)} do not match qweight {tuple(qweight.shape)}")
    # Little-endian words: byte b of word j holds columns 8j + 2b (low nibble) and 8j + 2b + 1.
    words = qweight.contiguous().view(torch.int32)
    return Int4Packed(words, scales.t().contiguous(), zeros.t().contiguous(), group_size)


@functools.cache
def tile_config(m: int, n: int, k: int) -> TileConfig:
    """Tile shape, warps and pipeline stages for an [m, k] x [k, n] product (shapes only)."""
    if m <= GEMV_MAX_M:
        # One or two long K steps per program; 4-8 columns per program keep >= 2 programs per SM
        # on ref-336m's N = 1024 and bound the x tile each program reloads from L2.
        return TileConfig(_pow2(m), 4 if n <= 2048 else 8, min(1024, _pow2(k)), 4, 1)
    block_k = min(128, _pow2(k))
    if m <= 16:
        return TileConfig(16, 32, block_k, 4, 3)
    if m <= 64:
        return TileConfig(32 if m <= 32 else 64, 64, block_k, 4, 3)
    if m <= 512:
        # Measured on the H100 (bench/int4_matmul.py --sweep): taller, narrower tiles dequantize each
        # weight tile for more rows; 128 x 64 x 128 beat 64 x 128 x 64 by 28-40% at M = 256.
        return TileConfig(128, 64, block_k, 4, 3)
    return TileConfig(128, 128, min(64, block_k), 4, 3)


def int4_dequantize(packed: Int4Packed, dtype: torch.dtype) -> torch.Tensor:
    """The weight [N, K] in `dtype` (fp32 arithmetic, as `quant.dequantize`), in one kernel.

    For prefill-sized batches: at thousands of rows, dequantizing the whole weight once (a few us:
    it writes 4x the packed bytes) and handing it to cuBLAS beats dequantizing each weight tile once
    per row tile inside `int4_matmul` (docs/perf.md)."""
    n, k = packed.out_features, packed.in_features
    out = torch.empty((n, k), dtype=dtype, device=packed.words.device)
    block_n, block_k = 32, 128
    grid = (-(-n // block_n), -(-k // block_k))
    _kernels()._int4_dequantize_kernel[grid](
        packed.words,
        packed.scales,
        packed.zeros,
        out,
        n,
        K=k,
        GROUP=packed.group_size,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
    )
    return out


def int4_matmul(x2d: torch.Tensor, packed: Int4Packed, config: TileConfig | None = None) -> torch.Tensor:
    """x2d [M, K] (bf16 or fp16, last dim contiguous) @ W^T -> [M, N] in x's dtype, fp32 sums.

    `config` overrides `tile_config` (for benchmark sweeps)."""
    if x2d.dtype not in (torch.bfloat16, torch.float16):
        raise TypeError(f"int4_matmul takes bf16 or fp16 activations, got {x2d.dtype}")
    m, k = x2d.shape
    n = packed.out_features
    if k != packed.in_features:
        raise ValueError(f"x has {k} features, the weight {packed.in_features}")
    if x2d.stride(1) != 1:
        x2d = x2d.contiguous()
    out = torch.empty((m, n), dtype=x2d.dtype, device=x2d.device)
    if m == 0:
        return out
    cfg = config or tile_config(m, n, k)
    grid = (-(-m // cfg.block_m) * -(-n // cfg.block_n),)
    _kernels()._int4_matmul_kernel[grid](
        x2d,
        packed.words,
        packed.scales,
        packed.zeros,
        out,
        m,
        n,
        x2d.stride(0),
        K=k,
        GROUP=packed.group_size,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k,
        GROUP_M=GROUP_M,
        num_warps=cfg.warps,
        num_stages=cfg.stages,
    )
    return out
