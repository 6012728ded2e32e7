"""Where an engine step's time goes: host phases, the GPU forward alone, and INT4 matmul kernels.

    python -m bench.step_profile --out profile.json [--batches 1,256] [--device cuda]

For each batch size, N requests (prompt 128, ignore_eos) are prefilled, then decode steps run
back to back through `Engine.step` on the calling thread (no event loop consumer, so what is timed
is the engine alone). Each phase is timed with `time.perf_counter` around the engine's own methods;
with `--sync` a device synchronisation closes every phase, so GPU time is charged to the phase
that launched it instead of to the next sync point (`.tolist()` in the sampler). The decode graph
replay is also timed alone with CUDA events. The matmul table times every ref-336m linear shape at
M = 1, 16, 64, 256, 8192: tinygemm INT4, bf16 dense, and torch's dequantize-then-matmul.
Prints JSON; the phase figures are milliseconds per step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from bench.engine import make_prompts
from clawdbot.services.inference.builder import build_engine
from clawdbot.services.inference.dummy import write_dummy
from clawdbot.services.inference.engine import Engine
from clawdbot.services.inference.sequence import SamplingParams, Sequence
from clawdbot.services.inference.settings import InferenceSettings

PHASES = {
    "runner": ("prepare", "forward_step", "sampling_tensors"),
    "scheduler": ("schedule", "advance", "resolve"),
    "engine": ("_emit",),
}


def instrument(engine: Engine, totals: dict[str, float], sync: Callable[[], None]) -> None:
    """Wrap the engine's phase methods (instance attributes shadow the class's)."""
    import clawdbot.services.inference.model_runner as runner_module

    def wrap(owner: Any, name: str) -> None:
        inner = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = inner(*args, **kwargs)
            sync()
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
            return result

        setattr(owner, name, timed)

    owners = {"runner": engine.runner, "scheduler": engine.scheduler, "engine": engine}
    for key, names in PHASES.items():
        for name in names:
            wrap(owners[key], name)
    wrap(runner_module, "sample")
    if engine.runner.decode_graphs is not None:
        wrap(engine.runner.decode_graphs, "run")


class Probe:
    """Phase totals of the instrumented engine; `sync` switches device syncs at phase ends."""

    def __init__(self, engine: Engine) -> None:
        self.totals: dict[str, float] = {}
        self.sync = False
        self.device = engine.device
        instrument(engine, self.totals, self.maybe_sync)

    def maybe_sync(self) -> None:
        if self.sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def top_functions(profiler: cProfile.Profile, steps: int, count: int = 25) -> list[str]:
    """The functions with the most own time, in microseconds per step (cProfile's own overhead included)."""
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:count]  # type: ignore[attr-defined]
    return [
        f"{own / steps * 1e6:8.1f} us own {total / steps * 1e6:8.1f} us total  {calls // steps:5d} calls  "
        f"{Path(file).name}:{line}({name})"
        for (file, line, name), (_, calls, own, total, _) in rows
    ]


@contextlib.contextmanager
def stepped_by_hand(engine: Engine) -> Iterator[None]:
    """The engine's thread is not started: `submit` checks for one, and the caller steps instead."""
    engine._thread = object()
    try:
        yield
    finally:
        engine._thread = None


def queue_fresh_prompts(engine: Engine, sequences: int, seed: int, tag: str) -> None:
    """`sequences` new 128-token prompts, one output token each (a new seed: no prefix-cache hits)."""
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    for i, prompt in enumerate(make_prompts(sequences, 128, engine.config.vocab_size, seed=seed)):
        engine.submit(Sequence(f"{tag}{seed}-{i}", list(prompt), params))


def run_prefill(engine: Engine) -> float:
    """Step until nothing is in flight; the seconds it took, the device's work included."""
    start = time.perf_counter()
    engine.step()
    while engine._in_flight is not None:
        engine.step()
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    return time.perf_counter() - start


def decode_profile(
    engine: Engine, probe: Probe, batch: int, steps: int, sync: bool, profile: bool = False
) -> dict[str, Any]:
    totals = probe.totals
    probe.sync = sync
    prompts = make_prompts(batch, 128, engine.config.vocab_size, seed=1)
    params = SamplingParams(temperature=0.0, max_tokens=steps + 8, ignore_eos=True)

    async def run() -> dict[str, Any]:
        with stepped_by_hand(engine):
            for i, prompt in enumerate(prompts):
                engine.submit(Sequence(f"p{batch}{'s' if sync else ''}-{i}", list(prompt), params))
            prefill_start = time.perf_counter()
            prefill_steps = 0
            while engine.scheduler.waiting or any(s.num_output == 0 for s in engine.scheduler.running):
                engine.step()
                prefill_steps += 1
            prefill_seconds = time.perf_counter() - prefill_start
            totals.clear()
            step_times = []
            profiler = cProfile.Profile() if profile else None
            if profiler is not None:
                profiler.enable()
            for _ in range(steps):
                start = time.perf_counter()
                engine.step()
                step_times.append(time.perf_counter() - start)
            if profiler is not None:
                profiler.disable()
            for seq in list(engine.scheduler.running):
                engine.abort(seq.request_id)
            engine._apply_aborts()
            while engine._in_flight is not None:  # the step launched for the aborted batch
                engine.step()
        return {
            "batch": batch,
            "prefill_steps": prefill_steps,
            "prefill_ms": round(prefill_seconds * 1e3, 2),
            "step_ms_median": round(statistics.median(step_times) * 1e3, 3),
            "tokens_per_s": round(batch / statistics.median(step_times), 1),
            "phases_ms_per_step": {k: round(v / steps * 1e3, 3) for k, v in sorted(totals.items())},
            **({"cprofile_top": top_functions(profiler, steps)} if profiler is not None else {}),
        }

    return asyncio.run(run())


def prefill_profile(
    engine: Engine, probe: Probe, sequences: int, seed: int, sync: bool, profile: bool = False
) -> dict[str, Any]:
    """One step that prefills `sequences` fresh 128-token prompts (8,192 tokens at 64): its wall time
    and phases; with `sync`, each phase's GPU work is charged to it (the forward's GPU time shows)."""
    totals = probe.totals
    probe.sync = sync

    async def run() -> dict[str, Any]:
        with stepped_by_hand(engine):
            queue_fresh_prompts(engine, sequences, seed, "prefill")
            totals.clear()
            profiler = cProfile.Profile() if profile else None
            if profiler is not None:
                profiler.enable()
            wall = run_prefill(engine)
            if profiler is not None:
                profiler.disable()
        return {
            "sequences": sequences,
            "tokens": sequences * 128,
            "wall_ms": round(wall * 1e3, 2),
            "phases_ms": {k: round(v * 1e3, 3) for k, v in sorted(totals.items())},
            **({"cprofile_top": top_functions(profiler, 1)} if profiler is not None else {}),
        }

    return asyncio.run(run())


def prefill_device_time(engine: Engine, sequences: int, seed: int) -> dict[str, Any]:
    """One 8,192-token prefill step under torch.profiler: the wall time against the sum of the device
    kernels' times (how much of the step the GPU is busy), and the kernels that take the most."""
    from torch.profiler import ProfilerActivity, profile

    async def run() -> dict[str, Any]:
        with stepped_by_hand(engine):
            queue_fresh_prompts(engine, sequences, seed, "traced")
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
                wall = run_prefill(engine)
        kernels = [e for e in trace.key_averages() if e.device_time_total > 0]
        device_us = sum(e.self_device_time_total for e in kernels)
        top = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:12]
        return {
            "wall_ms": round(wall * 1e3, 2),
            "device_kernels_ms": round(device_us / 1e3, 2),
            "top_kernels": [
                f"{e.self_device_time_total / 1e3:7.2f} ms {e.count:5d}x {e.key[:90]}" for e in top
            ],
        }

    return asyncio.run(run())


def graph_replay_ms(engine: Engine, batch: int) -> float | None:
    graphs = engine.runner.decode_graphs
    if graphs is None:
        return None
    size = next(b for b in graphs.buckets if b >= batch)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graphs.graphs[size].replay()
    start.record()
    for _ in range(20):
        graphs.graphs[size].replay()
    end.record()
    torch.cuda.synchronize()
    return round(start.elapsed_time(end) / 20, 4)


def bench_ms(fn: Callable[[], Any], repeat: int = 50) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return round(start.elapsed_time(end) / repeat, 4)


def matmul_table(group_size: int = 128) -> list[dict[str, Any]]:
    """INT4 tinygemm vs bf16 dense vs dequantize+matmul over ref-336m's linear shapes."""
    from clawdbot.services.inference.quant import Int4Linear

    rows = []
    for k, n, name in ((1024, 1536, "qkv"), (1024, 1024, "o"), (1024, 5632, "gate_up"), (2816, 1024, "down")):
        dense = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
        q = Int4Linear.from_linear(dense, group_size)
        q.prepare(torch.bfloat16)
        q_dequant = Int4Linear.from_linear(dense, group_size)  # no prepare: dequantize path
        for m in (1, 16, 64, 256, 8192):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            rows.append(
                {
                    "layer": name,
                    "m": m,
                    "tinygemm_ms": bench_ms(lambda q=q, x=x: q(x)),
                    "bf16_dense_ms": bench_ms(lambda d=dense, x=x: d(x)),
                    "dequant_then_mm_ms": bench_ms(lambda q=q_dequant, x=x: q(x), repeat=10),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dummy", default="ref-336m")
    parser.add_argument("--quantization", default="int4")
    parser.add_argument("--no-matmul", action="store_true")
    parser.add_argument("--prefill", action="store_true", help="also profile one 8,192-token prefill step")
    parser.add_argument("--cprofile", action="store_true", help="also profile the largest batch (unsynced)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="step-profile-"))
    folder = write_dummy(args.dummy, work / args.dummy)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
        "model": args.dummy,
        "quantization": args.quantization,
    }
    batches = [int(b) for b in args.batches.split(",")]
    settings = InferenceSettings(
        model=folder,
        quantization=args.quantization,
        device=args.device,
        max_num_seqs=max(batches),
        max_num_batched_tokens=8192,
        max_waiting=1024,
        **({"num_kv_blocks": 8192, "dtype": "float32"} if args.device == "cpu" else {}),
    )
    engine, _ = build_engine(settings)
    probe = Probe(engine)
    for sync in (False, True) if args.device == "cuda" else (False,):
        for batch in batches:
            key = f"batch_{batch}" + ("_sync" if sync else "")
            profile = args.cprofile and not sync and batch == max(batches)
            report[key] = decode_profile(engine, probe, batch, args.steps, sync, profile)
            if args.device == "cuda" and not sync:
                report[key]["graph_replay_ms"] = graph_replay_ms(engine, batch)
            print(json.dumps({key: report[key]}), flush=True)
    if args.prefill:
        runs = {"prefill_8192_first": False, "prefill_8192": False, "prefill_8192_sync": True}
        if args.cprofile:
            runs["prefill_8192_cprofile"] = False
        for seed, (key, sync) in enumerate(runs.items(), start=100):
            report[key] = prefill_profile(engine, probe, 64, seed, sync, key.endswith("cprofile"))
            print(json.dumps({key: report[key]}), flush=True)
        if args.device == "cuda":
            probe.sync = False
            report["prefill_8192_device"] = prefill_device_time(engine, 64, 200)
            print(json.dumps({"prefill_8192_device": report["prefill_8192_device"]}), flush=True)
    if args.device == "cuda" and not args.no_matmul:
        report["matmul"] = matmul_table()
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
