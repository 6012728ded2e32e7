"""INT4 weight-only quantization: group-wise, asymmetric, 16-bit scales and zeros, packed storage.

A load-time transformation of modules (gpt-fast's shape): `quantize_model` swaps the decoder's
`nn.Linear`s for `Int4Linear`; the model class is unchanged. Storage is two 4-bit codes per byte
(`qweight` [out, in/2] uint8, low nibble = even column) with per-group `scales` and `zeros`
([out, in/group], fp16 or bf16): w ≈ q * scale + zero, q in 0..15. At run time the weights are
repacked once for torch's tinygemm kernels (`_weight_int4pack_mm_for_cpu` on the CPU,
`_weight_int4pack_mm` on CUDA, both on bf16 activations); on CUDA with Triton our own kernel
(kernels/int4_matmul.py, reading `qweight` in place) takes every row count where it measured
faster, and a plain dequantize-then-matmul serves where none can.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clawdbot.services.inference.kernels import triton_available
from clawdbot.services.inference.kernels.int4_matmul import (
    Int4Packed,
    int4_dequantize,
    int4_matmul,
    int4_matmul_supported,
    pack_int4_for_triton,
)
from clawdbot.shared.errors import InvalidArgument

log = logging.getLogger("clawdbot.inference.quant")

DEFAULT_GROUP_SIZE = 128
QUANT_METHOD = "clawdbot-int4"


def effective_group_size(in_features: int, group_size: int) -> int:
    """The group size used for a layer: `group_size`, or the whole row when the row is shorter."""
    group = min(group_size, in_features)
    if in_features % group or in_features % 2:
        raise InvalidArgument(
            f"in_features {in_features} is not a multiple of the group size {group}", field="group_size"
        )
    return group


def quantize_weight(
    weight: torch.Tensor, group_size: int, scale_dtype: torch.dtype = torch.float16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(qweight uint8 [N, K/2], scales [N, K/g], zeros [N, K/g]) for a weight [N, K]."""
    out_features, in_features = weight.shape
    groups = weight.detach().float().reshape(out_features, in_features // group_size, group_size)
    low = groups.amin(dim=-1)
    high = groups.amax(dim=-1)
    scales = ((high - low) / 15).clamp(min=1e-8).to(scale_dtype)
    zeros = low.to(scale_dtype)
    # Round with the 16-bit scale/zero actually stored, so dequantization sees the codes it expects.
    codes = ((groups - zeros.float()[..., None]) / scales.float()[..., None]).round().clamp(0, 15)
    codes = codes.to(torch.uint8).reshape(out_features, in_features)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return packed.contiguous(), scales, zeros


def unpack_codes(qweight: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] -> int32 codes [N, K]."""
    return torch.stack((qweight & 0x0F, qweight >> 4), dim=-1).reshape(qweight.shape[0], -1).to(torch.int32)


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The float32 weight [N, K] the packed codes stand for."""
    codes = unpack_codes(qweight).float()
    out_features, in_features = codes.shape
    group = in_features // scales.shape[1]
    grouped = codes.view(out_features, -1, group) * scales.float()[..., None] + zeros.float()[..., None]
    return grouped.view(out_features, in_features)


class Int4Linear(nn.Module):
    """A linear layer whose weight is INT4 codes + 16-bit per-group scales and zeros."""

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    _verified: ClassVar[set[str]] = set()  # kernels whose repacking matched the dequantization
    # On CUDA, rows (tokens) in this range go to tinygemm, all others to the Triton kernel. Measured
    # on the H100 (docs/perf.md): even at 1-4 rows, tinygemm ahead at 16 (25 vs 38 us a layer), mixed
    # at 64, and from there 2-5x behind (11x at a prefill's 8192 rows).
    tinygemm_rows: ClassVar[range] = range(5, 49)
    # On CUDA, from this many rows the weight is dequantized whole (one Triton kernel, a few us: it
    # writes 4x the packed bytes) and multiplied by cuBLAS. Measured on the H100 (docs/perf.md), in
    # decode graphs per layer at 256 rows: 40 us against the Triton kernel's 78 (which dequantizes
    # each weight tile once per 128-row tile); at 64 rows 35 against 57; at a prefill's 8192 rows
    # ~1.1x dense bf16 against 2x. Below 64 rows tinygemm and the Triton GEMV stay ahead.
    dense_rows: ClassVar[int] = 64

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        group_size: int,
        scale_dtype: torch.dtype = torch.float16,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = effective_group_size(in_features, group_size)
        groups = in_features // self.group_size
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=scale_dtype))
        self.register_buffer("zeros", torch.zeros(out_features, groups, dtype=scale_dtype))
        self.bias = (
            nn.Parameter(torch.zeros(out_features, dtype=dtype), requires_grad=False) if bias else None
        )
        self._kernel: str | None = None  # "cpu" | "cuda" once `prepare()` repacked for tinygemm
        self._packed: torch.Tensor | None = None
        self._scales_zeros: torch.Tensor | None = None
        self._triton: Int4Packed | None = None  # the Triton kernel's layout, on CUDA

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, group_size: int, scale_dtype: torch.dtype = torch.float16
    ) -> Int4Linear:
        module = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            group_size,
            scale_dtype,
            dtype=linear.weight.dtype,
        )
        qweight, scales, zeros = quantize_weight(linear.weight, module.group_size, scale_dtype)
        module.qweight.copy_(qweight)
        module.scales.copy_(scales)
        module.zeros.copy_(zeros)
        if linear.bias is not None and module.bias is not None:
            module.bias.data.copy_(linear.bias.data)
        return module.to(linear.weight.device)

    def prepare(self, compute_dtype: torch.dtype) -> None:
        """Repack for torch's tinygemm kernel on this device, when it accepts these shapes.

        The kernels run on bf16 activations (on the CPU the fp32 variant exists but is tens of
        times slower than the bf16 one, which uses AVX-512 BF16); inputs of another dtype are cast
        in and out, an error far below the 4-bit weights' own.
        """
        self._kernel = None
        device = self.qweight.device
        self._triton = None
        if (
            device.type == "cuda"
            and triton_available()
            and int4_matmul_supported(self.in_features, self.group_size)
        ):
            self._triton = pack_int4_for_triton(self.qweight, self.scales, self.zeros, self.group_size)
        # tinygemm stores zero as the value of code 8: w = (q - 8) * scale + zero8.
        zero8 = self.zeros.float() + 8 * self.scales.float()
        scales_zeros = torch.stack((self.scales.float(), zero8), dim=-1).transpose(0, 1).contiguous()
        try:
            if device.type == "cpu" and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
                packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_codes(self.qweight), 2)
                kernel = "cpu"
            elif device.type == "cuda" and hasattr(torch.ops.aten, "_weight_int4pack_mm"):
                codes = unpack_codes(self.qweight)
                nibbles = ((codes[:, 0::2] << 4) | codes[:, 1::2]).to(torch.uint8)
                packed = torch.ops.aten._convert_weight_to_int4pack(nibbles.contiguous(), 8)
                kernel = "cuda"
            else:
                return
            self._packed, self._scales_zeros, self._kernel = packed, scales_zeros.to(torch.bfloat16), kernel
            if kernel in Int4Linear._verified:
                return
            # Check the repacking once per kernel and process, on a slice of output rows.
            rows = min(self.out_features, 64)
            probe = torch.randn(3, self.in_features, device=device, dtype=compute_dtype)
            expected = F.linear(
                probe.float(), dequantize(self.qweight[:rows], self.scales[:rows], self.zeros[:rows])
            )
            got = self._tinygemm(probe).float()[:, :rows]
            if ((got - expected).norm() / expected.norm().clamp(min=1e-12)).item() > 2e-2:
                raise RuntimeError("tinygemm disagrees with the reference dequantization")
            Int4Linear._verified.add(kernel)
        except (RuntimeError, NotImplementedError) as exc:
            log.debug("tinygemm unavailable for %sx%s: %s", self.out_features, self.in_features, exc)
            self._kernel, self._packed, self._scales_zeros = None, None, None

    @property
    def kernel(self) -> str:
        return self._kernel or "dequant"

    def _tinygemm(self, x2d: torch.Tensor) -> torch.Tensor:
        assert self._packed is not None and self._scales_zeros is not None
        x = x2d.to(torch.bfloat16)
        if self._kernel == "cpu":
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x, self._packed, self.group_size, self._scales_zeros
            )
        else:
            out = torch.ops.aten._weight_int4pack_mm(x, self._packed, self.group_size, self._scales_zeros)
        return out.to(x2d.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.numel() // self.in_features
        if self._triton is not None and (rows not in Int4Linear.tinygemm_rows or self._kernel is None):
            x2d = x.reshape(-1, self.in_features)
            half = x2d if x2d.dtype in (torch.bfloat16, torch.float16) else x2d.to(torch.bfloat16)
            if rows >= Int4Linear.dense_rows:
                out = F.linear(half, int4_dequantize(self._triton, half.dtype))
            else:
                out = int4_matmul(half, self._triton)
            out = out.to(x.dtype).reshape(*shape[:-1], self.out_features)
            return out + self.bias if self.bias is not None else out
        if self._kernel is not None and x.numel() > 0:
            out = self._tinygemm(x.reshape(-1, self.in_features).contiguous())
            out = out.reshape(*shape[:-1], self.out_features)
            return out + self.bias if self.bias is not None else out
        weight = dequantize(self.qweight, self.scales, self.zeros).to(x.dtype)
        return F.linear(x, weight, self.bias)


QUANTIZED_NAMES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def quantize_model(
    model: nn.Module,
    group_size: int = DEFAULT_GROUP_SIZE,
    lm_head: bool = False,
    scale_dtype: torch.dtype = torch.float16,
    empty: bool = False,
) -> None:
    """Swap the decoder's linear layers (and the lm_head if asked) for `Int4Linear`, in place.

    `empty=True` builds the quantized structure without quantizing (to load a saved checkpoint).
    """
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and (name.rsplit(".", 1)[-1] in QUANTIZED_NAMES or (lm_head and name == "lm_head"))
    ]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if empty:
            replacement = Int4Linear(
                linear.in_features,
                linear.out_features,
                linear.bias is not None,
                group_size,
                scale_dtype,
                dtype=linear.weight.dtype,
            ).to(linear.weight.device)
        else:
            replacement = Int4Linear.from_linear(linear, group_size, scale_dtype)
        setattr(parent, child, replacement)


def prepare_kernels(model: nn.Module, compute_dtype: torch.dtype) -> dict[str, int]:
    """Repack every Int4Linear for its device's kernel; counts of layers per kernel used."""
    counts: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, Int4Linear):
            module.prepare(compute_dtype)
            counts[module.kernel] = counts.get(module.kernel, 0) + 1
    return counts
