"""Benchmark the Triton W4A16 matmul against torch's tinygemm, dense bf16 and dequantize-then-linear.

    python -m bench.int4_matmul [--sweep] [--out FILE]

For each ref-336m linear shape (qkv 1024->1536, o 1024->1024, gate_up 1024->5632, down
2816->1024, and an lm_head-sized 1024->32000) and M in 1/16/64/256/1024/8192, bf16 activations,
group 128, times four ways of computing x @ W^T:
- triton: `int4_matmul` on the layout of `pack_int4_for_triton`;
- tinygemm: `torch.ops.aten._weight_int4pack_mm`, repacked as `Int4Linear.prepare` does;
- dense: `F.linear` on the dequantized weight held in bf16 (4x the weight bytes: the ceiling);
- dequant: quant.py's `dequantize` then `F.linear`, the fallback `Int4Linear` uses without kernels;
- triton_dequant: `int4_dequantize` (one Triton kernel) then `F.linear`, what `Int4Linear` uses
  from `dense_rows` rows (prefill).
Times are medians of `triton.testing.do_bench` (L2 flushed before each call, so M=1 reads the
weights from DRAM; each call timed alone, so where the GPU work is shorter than the launch cost,
that cost is what shows) and, for M <= 512, of a CUDA graph of 20 calls replayed (launch gaps
gone; the weights stay in L2 between the calls, so small layers can beat DRAM bandwidth).
weight_GBps counts the bytes each way must read for its weight (packed codes + scales + zeros,
bf16 for dense and dequant) per do_bench call; TFLOPs is 2*M*N*K per do_bench call. rel_err is the
relative Frobenius error against `F.linear(x.float(), dequantize(...))`. `--sweep` also times a
grid of Triton tile settings on three shapes (for `tile_config`; a few minutes more). Prints one JSON object (and
writes it to --out).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import itertools
import json
import platform
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from bench.timing import graph_ms, median_ms
from clawdbot.services.inference.kernels.int4_matmul import (
    TileConfig,
    int4_dequantize,
    int4_matmul,
    pack_int4_for_triton,
    tile_config,
)
from clawdbot.services.inference.quant import dequantize, quantize_weight, unpack_codes

SHAPES = {
    "qkv": (1024, 1536),
    "o": (1024, 1024),
    "gate_up": (1024, 5632),
    "down": (2816, 1024),
    "lm_head": (1024, 32000),
}
MS = (1, 16, 64, 256, 1024, 8192)
GROUP = 128
GRAPH_MAX_M = 512
DTYPE = torch.bfloat16


def tinygemm_setup(
    qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed weight, scales_and_zeros) for `_weight_int4pack_mm`: `Int4Linear.prepare`'s CUDA branch."""
    zero8 = zeros.float() + 8 * scales.float()
    scales_zeros = torch.stack((scales.float(), zero8), dim=-1).transpose(0, 1).contiguous()
    codes = unpack_codes(qweight)
    nibbles = ((codes[:, 0::2] << 4) | codes[:, 1::2]).to(torch.uint8)
    packed = torch.ops.aten._convert_weight_to_int4pack(nibbles.contiguous(), 8)
    return packed, scales_zeros.to(torch.bfloat16)


class Layer:
    """One quantized weight in every form the four ways need."""

    def __init__(self, in_features: int, out_features: int, seed: int) -> None:
        generator = torch.Generator(device="cuda").manual_seed(seed)
        weight = torch.randn(out_features, in_features, device="cuda", generator=generator) * 0.05
        self.qweight, self.scales, self.zeros = quantize_weight(weight, GROUP)  # fp16 scales
        self.exact = dequantize(self.qweight, self.scales, self.zeros)
        self.dense = self.exact.to(DTYPE)
        self.packed = pack_int4_for_triton(self.qweight, self.scales, self.zeros, GROUP)
        self.tiny_packed, self.tiny_sz = tinygemm_setup(self.qweight, self.scales, self.zeros)
        self.int4_bytes = self.qweight.numel() + 2 * self.scales.numel() * self.scales.element_size()

    def ways(self, x: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
        return {
            "triton": lambda: int4_matmul(x, self.packed),
            "tinygemm": lambda: torch.ops.aten._weight_int4pack_mm(x, self.tiny_packed, GROUP, self.tiny_sz),
            "dense": lambda: F.linear(x, self.dense),
            "dequant": lambda: F.linear(x, dequantize(self.qweight, self.scales, self.zeros).to(x.dtype)),
            "triton_dequant": lambda: F.linear(x, int4_dequantize(self.packed, x.dtype)),
        }


def measure(name: str, layer: Layer, m: int) -> dict[str, Any]:
    in_features, out_features = SHAPES[name]
    x = torch.randn(m, in_features, device="cuda", dtype=DTYPE)
    ref = F.linear(x.float(), layer.exact)
    row: dict[str, Any] = {"layer": name, "M": m, "N": out_features, "K": in_features}
    row["triton_config"] = tile_config(m, out_features, in_features)._asdict()
    flops = 2 * m * out_features * in_features
    for way, fn in layer.ways(x).items():
        try:
            out = fn()
        except (RuntimeError, NotImplementedError) as exc:
            row[way] = {"error": str(exc).splitlines()[0]}
            continue
        ms = median_ms(fn, warmup=10, rep=50)
        weight_bytes = (
            layer.int4_bytes if way in ("triton", "tinygemm", "triton_dequant") else layer.dense.numel() * 2
        )
        result = {
            "us": round(ms * 1e3, 1),
            "weight_GBps": round(weight_bytes / ms / 1e6),
            "TFLOPs": round(flops / ms / 1e9, 1),
            "rel_err": float(f"{((out.float() - ref).norm() / ref.norm()).item():.2e}"),
        }
        if m <= GRAPH_MAX_M:
            graph = graph_ms(fn)
            result["graph_us"] = round(graph * 1e3, 1)
            result["graph_weight_GBps"] = round(weight_bytes / graph / 1e6)
        row[way] = result
        del out
    return row


def sweep_candidates(m: int) -> list[TileConfig]:
    """GEMV settings for small M, tensor-core tiles from M = 2 on."""
    configs = []
    if m <= 8:
        block_m = 1 << (m - 1).bit_length()
        for block_n, block_k, warps in itertools.product((4, 8, 16), (256, 1024), (2, 4)):
            configs.append(TileConfig(block_m, block_n, block_k, warps, 1))
    if m >= 2:
        block_m = min(128, max(16, 1 << (m - 1).bit_length()))
        shapes = [(16, 32), (16, 64)] if block_m == 16 else [(block_m, 64), (block_m, 128), (64, 128)]
        for (bm, bn), block_k, warps, stages in itertools.product(shapes, (64, 128), (4, 8), (3, 4)):
            if bm * bn >= 128 * 128 or warps == 4:  # 8 warps only pay on the largest tiles
                configs.append(TileConfig(bm, bn, block_k, warps, stages))
    return list(dict.fromkeys(configs))


def sweep(layers: dict[str, Layer]) -> list[dict[str, Any]]:
    """The five fastest Triton settings per (layer, M), with what `tile_config` picks."""
    from triton.runtime.errors import OutOfResources

    rows = []
    for name, m in itertools.product(("qkv", "down", "lm_head"), (1, 4, 16, 64, 256, 8192)):
        layer = layers[name]
        x = torch.randn(m, SHAPES[name][0], device="cuda", dtype=DTYPE)
        timed = []
        for config in sweep_candidates(m):
            fn = functools.partial(int4_matmul, x, layer.packed, config)
            try:
                ms = graph_ms(fn) if m <= GRAPH_MAX_M else median_ms(fn, warmup=10, rep=50)
            except OutOfResources:  # a tile too large for shared memory or registers
                continue
            timed.append((round(ms * 1e3, 1), config._asdict()))
        timed.sort(key=lambda t: t[0])
        chosen = tile_config(m, *SHAPES[name][::-1])
        rows.append(
            {
                "layer": name,
                "M": m,
                "timer": "graph" if m <= GRAPH_MAX_M else "do_bench",
                "chosen": chosen._asdict(),
                "best": [{"us": us, **config} for us, config in timed[:5]],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sweep", action="store_true", help="also time a grid of Triton tile settings")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    import triton

    layers = {name: Layer(k, n, seed) for seed, (name, (k, n)) in enumerate(SHAPES.items())}
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "dtype": "bfloat16",
        "group_size": GROUP,
        "results": [measure(name, layers[name], m) for name in SHAPES for m in MS],
    }
    if args.sweep:
        report["sweep"] = sweep(layers)
    text = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
