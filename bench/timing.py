"""GPU timers shared by the kernel benchmarks: Triton's `do_bench` median, and the per-call time
inside a CUDA graph (what the engine's decode graphs pay, without Python launch cost)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

GRAPH_CALLS = 20


def median_ms(fn: Callable[[], Any], warmup: int = 25, rep: int = 100) -> float:
    """Median milliseconds of eager calls, L2 flushed between them (`triton.testing.do_bench`)."""
    import triton

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def graph_ms(fn: Callable[[], Any]) -> float:
    """Per-call time from replaying a graph of GRAPH_CALLS calls (median of 20 replays)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(GRAPH_CALLS):
            fn()
    graph.replay()
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / GRAPH_CALLS)
    return sorted(times)[len(times) // 2]
