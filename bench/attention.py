"""Benchmark decode attention over the paged KV cache: the Triton kernel against the torch reference.

    python bench/attention.py [--prefill] [--sweep] [--out FILE]

The ref-336m layer shape (16 heads, 4 KV heads, head_dim 64, bf16, block_size 16, window 4096),
one decode token per sequence, batch 1/16/64/256 x context 1k/4k/8k/32k. Times are medians of
`triton.testing.do_bench` (L2 flushed, each call timed alone: where the GPU work is shorter than
the host's launch cost, that cost is what shows)
and, for Triton, of a CUDA graph of 20 calls replayed (launch gaps gone; the per-call figure).
GB/s counts the K/V bytes a window-limited kernel must read: batch x min(context, window) keys.
`--prefill` also times chunked-prefill steps (several query tokens per sequence, eager), and
`--sweep` times a few kernel settings (keys per step, warps, pipeline stages) on four shapes.
The eager figures include the Python launch cost of the wrapper (3 launches); the engine's decode
runs inside CUDA graphs, where the graph figure is what a layer costs.
Prints one JSON object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import platform
from collections.abc import Callable
from typing import Any

import torch

from bench.timing import graph_ms, median_ms
from clawdbot.services.inference.attention import torch_paged_attention
from clawdbot.services.inference.kernels import paged_attention
from clawdbot.services.inference.kernels.synthetic import PagedStep, random_step

SHAPE = {"heads": 16, "kv_heads": 4, "head_dim": 64, "window": 4096, "block_size": 16}
BATCHES = (1, 16, 64, 256)
CONTEXTS = (1024, 4096, 8192, 32768)


def copy_bandwidth_gbps() -> float:
    """Device-to-device copy of 1 GiB, counting bytes read plus bytes written."""
    src = torch.empty(1 << 29, dtype=torch.float16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / ms / 1e6


def decode_step(batch: int, context: int, seed: int) -> PagedStep:
    return random_step([context] * batch, [1] * batch, dtype=torch.bfloat16, seed=seed, **SHAPE)


def call(step: PagedStep, backend: Callable[..., torch.Tensor]) -> Callable[[], torch.Tensor]:
    return lambda: backend(
        step.q, step.k, step.v, step.k_cache, step.v_cache, step.meta, step.group, step.scale
    )


def measure(batch: int, context: int) -> dict[str, Any]:
    step = decode_step(batch, context, seed=batch + context)
    triton_fn = call(step, paged_attention.triton_paged_attention)
    torch_fn = call(step, torch_paged_attention)
    diff = (triton_fn().float() - torch_fn().float()).abs().max().item()
    triton_ms = median_ms(triton_fn)
    torch_ms = median_ms(torch_fn)
    triton_graph_ms = graph_ms(triton_fn)
    kv_bytes = step.decode_kv_bytes()
    sms = paged_attention._sm_count(0)
    programs = batch * SHAPE["kv_heads"]
    splits = paged_attention.decode_splits(
        programs, step.group.block_tables.shape[1] * SHAPE["block_size"], sms
    )
    block_n, warps, _ = paged_attention.decode_config(programs, sms)
    return {
        "batch": batch,
        "context": context,
        "kv_MB": round(kv_bytes / 1e6, 2),
        "splits": splits,
        "block_n": block_n,
        "warps": warps,
        "triton_eager_us": round(triton_ms * 1e3, 1),
        "triton_graph_us": round(triton_graph_ms * 1e3, 1),
        "torch_eager_us": round(torch_ms * 1e3, 1),
        "speedup_eager": round(torch_ms / triton_ms, 1),
        "speedup_graph_vs_torch_eager": round(torch_ms / triton_graph_ms, 1),
        "triton_eager_GBps": round(kv_bytes / triton_ms / 1e6),
        "triton_graph_GBps": round(kv_bytes / triton_graph_ms / 1e6),
        "max_abs_diff": diff,
    }


def measure_prefill(batch: int, query_len: int, context: int) -> dict[str, Any]:
    """A chunked-prefill step: every sequence adds `query_len` tokens ending at `context`."""
    step = random_step([context] * batch, [query_len] * batch, dtype=torch.bfloat16, seed=3, **SHAPE)
    triton_fn = call(step, paged_attention.triton_paged_attention)
    torch_fn = call(step, torch_paged_attention)
    diff = (triton_fn().float() - torch_fn().float()).abs().max().item()
    triton_ms, torch_ms = median_ms(triton_fn), median_ms(torch_fn)
    window = SHAPE["window"]
    # score pairs actually inside the causal window, x 4 FLOPs per pair per head-dim (QK^T and PV)
    pairs = sum(min(p + 1, window) for p in range(context - query_len, context)) * batch
    flops = 4 * pairs * SHAPE["heads"] * SHAPE["head_dim"]
    return {
        "batch": batch,
        "query_len": query_len,
        "context": context,
        "triton_us": round(triton_ms * 1e3, 1),
        "torch_us": round(torch_ms * 1e3, 1),
        "speedup": round(torch_ms / triton_ms, 1),
        "triton_TFLOPs": round(flops / triton_ms / 1e9, 1),
        "max_abs_diff": diff,
    }


def sweep() -> list[dict[str, Any]]:
    rows = []
    settings = [(64, 2), (64, 4), (128, 2), (128, 4)]
    for batch, context in ((1, 32768), (16, 8192), (64, 8192), (256, 8192)):
        step = decode_step(batch, context, seed=1)
        kv_bytes = step.decode_kv_bytes()
        for (block_n, warps), stages in itertools.product(settings, (2, 3, 4)):
            paged_attention.DECODE_OVERRIDE = (block_n, warps, stages)
            ms = graph_ms(call(step, paged_attention.triton_paged_attention))
            rows.append(
                {
                    "batch": batch,
                    "context": context,
                    "block_n": block_n,
                    "warps": warps,
                    "stages": stages,
                    "graph_us": round(ms * 1e3, 1),
                    "GBps": round(kv_bytes / ms / 1e6),
                }
            )
    paged_attention.DECODE_OVERRIDE = None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sweep", action="store_true", help="also time a grid of kernel settings")
    parser.add_argument("--prefill", action="store_true", help="also time chunked-prefill steps")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    import triton

    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "shape": {**SHAPE, "dtype": "bfloat16", "decode_tokens_per_seq": 1},
        "settings": {
            "small (block_n, warps)": paged_attention.DECODE_SMALL,
            "large (block_n, warps)": paged_attention.DECODE_LARGE,
            "stages": paged_attention.DECODE_STAGES,
            "min_keys_per_split": paged_attention.MIN_KEYS_PER_SPLIT,
        },
        "copy_GBps": round(copy_bandwidth_gbps()),
        "results": [measure(b, c) for b in BATCHES for c in CONTEXTS],
    }
    if args.prefill:
        report["prefill"] = [
            measure_prefill(b, q, c)
            for b, q, c in ((1, 2048, 2048), (4, 512, 4096), (1, 512, 8192), (16, 128, 1024))
        ]
    if args.sweep:
        report["sweep"] = sweep()
    text = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
