"""Issue 4 on the GPU: correctness first, then speed against transformers on the same weights.

    python -m bench.gpu --out gpu.json [--sections correctness,ours,core,hf,grpc,long]

Prints one JSON object (and writes it to --out):
- correctness: greedy tokens of a tiny model, our engine on the CPU (fp32) vs CUDA (fp32, Triton
  attention, decode graphs); bf16 log-probabilities of our engine vs transformers (bf16 and fp32).
- hf: transformers `generate()` on ref-336m random weights, bf16, prompt 128, 256 new tokens,
  greedy: batch 1 (ms per decode step) and batch 256 (output tokens/s).
- ours-int4, ours-bf16: the same weights through `build_engine` and the service's `warm_up` (its
  own path: KV pool from free memory, Triton kernels, CUDA graphs, pipelined steps): single
  stream, and 256 concurrent requests (prompt 128, output 256, ignore_eos) with TTFT p50/p99,
  consumed by asyncio tasks in the same process.
- core-int4: the same load with the engine in its engine core process (as the service runs it),
  consumed by asyncio tasks in this process through `EngineClient`: three loads read token by
  token, two read every 20 ms (as the paced gRPC streams do); each with the core's steps, its
  share of time waiting for the device, its CPU seconds, and the consumer's CPU share.
- long: one 32k-token generation; KV blocks in use sampled as it grows (flat once the 4,096-token
  window fills).
- grpc, grpc-in-process: `clawdbot serve inference` (INT4) as a separate process, 256 concurrent
  Generate streams from client processes (bench/grpc_client.py: all streams from one process, then
  split over four started together); output tokens/s and TTFT as the clients see them. The first
  with the engine in its own process (the default), the second (only when named, as
  grpc-in-process) with `--in-process`. Clients: one process on one connection, one process on
  four connections, four processes; each load also reports the client's CPU share, the server's
  and the core's CPU seconds, and the engine's own mean TTFT for comparison.
- grpc-unpaced, grpc-no-hold, grpc20 (only when named): the service with neither pacing nor burst
  hold (every step's token goes out at once, as before this session), with pacing but no burst
  hold, and with a fixed `--stream-interval-ms 20`;
  grpc-pacing-N: the service with `--stream-pacing-us N`; grpc-quiet-N: with
  `--decode-chain-quiet-ms N`.
- core-grounded (only when named): grounded decoding's cost. The core-int4 load on the same weights
  with a word-level tokenizer.json beside them (digits at ids 15-24), in one core process: a single
  stream and three 256-request loads with every request grounded on its own ~250-character order
  record full of numbers, each paired with the same load ungrounded (order alternating); the
  medians and the on/off ratios of tokens/s (the issue's bound: >= 0.95).
- core-steps1, grpc-steps1 (only when named): the core section and the grpc section with one
  decode step a launch (`decode_steps` 1, the engine before chained decode steps).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.engine import make_prompts
from clawdbot.services.inference.builder import build_engine, warm_up
from clawdbot.services.inference.dummy import write_digit_tokenizer, write_dummy
from clawdbot.services.inference.engine import Engine
from clawdbot.services.inference.engine_client import EngineClient
from clawdbot.services.inference.events import StepEvent
from clawdbot.services.inference.sequence import SamplingParams, Sequence
from clawdbot.services.inference.server import EngineHandle
from clawdbot.services.inference.settings import InferenceSettings

PROMPT, OUTPUT, CONCURRENT = 128, 256, 256
UNPACED = ("--stream-pacing-us", "0", "--stream-burst-hold-ms", "0")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def drain(
    queue: asyncio.Queue[StepEvent], start: float, pace: float = 0.0
) -> tuple[list[int], list[float]]:
    """A request's tokens and when each arrived. With `pace` (seconds) the consumer sleeps that long
    after each read and then takes everything queued meanwhile, as the gRPC servicer's pacing does:
    one wake-up for many steps instead of one a step (a consumer cost that otherwise rivals the
    engine's own per step at 256 streams)."""
    tokens: list[int] = []
    times: list[float] = []
    while True:
        events = [await queue.get()]
        while not queue.empty():
            events.append(queue.get_nowait())
        now = time.perf_counter() - start
        for event in events:
            tokens += [t.token for t in event.tokens]
            times += [now] * len(event.tokens)
            if event.finish is not None or event.error is not None:
                return tokens, times
        if pace:
            await asyncio.sleep(pace)


async def load_test(
    engine: EngineHandle,
    prompts: list[list[int]],
    gen: int,
    tag: str,
    pace: float = 0.0,
    groundings: list[str] | None = None,
) -> dict[str, Any]:
    params = SamplingParams(temperature=0.0, max_tokens=gen, ignore_eos=True)
    cpu = time.process_time()
    start = time.perf_counter()
    queues = [
        engine.submit(
            Sequence(f"{tag}-{i}", list(p), params, grounding=groundings[i] if groundings else None)
        )
        for i, p in enumerate(prompts)
    ]
    results = await asyncio.gather(*(drain(q, start, pace) for q in queues))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    tokens = sum(len(t) for t, _ in results)
    ttft = [times[0] for _, times in results if times]
    gaps = [b - a for _, times in results for a, b in itertools.pairwise(times) if b > a]
    spans = [(times[-1] - times[0]) / (len(times) - 1) for _, times in results if len(times) > 1]
    return {
        "requests": len(prompts),
        "seconds": round(elapsed, 3),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / elapsed, 1),
        "ttft_ms_p50": round(percentile(ttft, 50) * 1e3, 2),
        "ttft_ms_p99": round(percentile(ttft, 99) * 1e3, 2),
        "decode_step_ms_mean": round(statistics.mean(gaps) * 1e3, 3) if gaps else None,
        # First token to last over the tokens between: with chained decode steps, tokens arrive a
        # chain at a time and the gaps above are a chain's, not a token's.
        "decode_ms_per_token": round(statistics.mean(spans) * 1e3, 3) if spans else None,
        # With the engine in another process: near 1, this consumer, not the engine, set the pace
        # (it reads and wakes 256 streams). In-process it also counts the engine thread.
        "consumer_cpu_share": round(cpu / elapsed, 2),
    }


def engine_for(folder: Path, quantization: str, dtype: str = "auto", **overrides: Any) -> Engine:
    settings = InferenceSettings(
        model=folder,
        quantization=quantization,
        device="cuda",
        dtype=dtype,
        max_num_seqs=CONCURRENT,
        max_num_batched_tokens=8192,
        max_waiting=1024,
        **overrides,
    )
    engine, _ = build_engine(settings)
    engine.start()
    return engine


async def greedy(engine: Engine, prompts: list[list[int]], gen: int, tag: str) -> list[list[int]]:
    params = SamplingParams(temperature=0.0, max_tokens=gen, ignore_eos=True)
    queues = [engine.submit(Sequence(f"{tag}-{i}", list(p), params)) for i, p in enumerate(prompts)]
    return [tokens for tokens, _ in await asyncio.gather(*(drain(q, 0.0) for q in queues))]


async def correctness(work: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    folder = write_dummy("tiny", work / "tiny")
    prompts = make_prompts(4, 40, 512, seed=3)
    out: dict[str, Any] = {}
    runs = {}
    for device in ("cpu", "cuda"):
        settings = InferenceSettings(
            model=folder, device=device, dtype="float32", max_num_seqs=8, num_kv_blocks=512
        )
        engine, _ = build_engine(settings)
        engine.start()
        try:
            runs[device] = await greedy(engine, prompts, 64, f"c-{device}")
        finally:
            engine.stop()
    out["fp32_cpu_vs_cuda_greedy_identical"] = runs["cpu"] == runs["cuda"]
    out["fp32_first_divergence"] = [
        next((i for i, (a, b) in enumerate(zip(x, y, strict=True)) if a != b), None)
        for x, y in zip(runs["cpu"], runs["cuda"], strict=True)
    ]
    # bf16: our top-20 log-probabilities at the first generated position vs transformers'.
    engine, _ = build_engine(
        InferenceSettings(model=folder, device="cuda", dtype="bfloat16", max_num_seqs=8, num_kv_blocks=512)
    )
    engine.start()
    try:
        params = SamplingParams(
            temperature=0.0, max_tokens=1, ignore_eos=True, logprobs=True, top_logprobs=20
        )
        queues = [engine.submit(Sequence(f"lp-{i}", list(p), params)) for i, p in enumerate(prompts)]
        events = [await q.get() for q in queues]
    finally:
        engine.stop()
    ids = torch.tensor(prompts, device="cuda")
    diffs: dict[str, float] = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        hf = (
            AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, attn_implementation="eager")
            .cuda()
            .eval()
        )
        with torch.no_grad():
            ref = torch.log_softmax(hf(ids).logits[:, -1].float(), dim=-1)
        worst = 0.0
        for row, event in enumerate(events):
            top = event.tokens[0].top or []
            for token, logprob in top:
                worst = max(worst, abs(logprob - float(ref[row, token])))
        diffs[name] = round(worst, 4)
        if name == "bf16":
            hf_bf16 = ref
        del hf
    hf32 = (
        AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager")
        .cuda()
        .eval()
    )
    with torch.no_grad():
        ref32 = torch.log_softmax(hf32(ids).logits[:, -1].float(), dim=-1)
    out["bf16_top20_logprob_max_abs_diff"] = {
        "ours_vs_transformers_bf16": diffs["bf16"],
        "ours_vs_transformers_fp32": diffs["fp32"],
        "transformers_bf16_vs_fp32": round(float((hf_bf16 - ref32).abs().max()), 4),
    }
    return out


def compiled_variants() -> dict[str, int]:
    """Compiled variants of each of our Triton kernels in this process (a variant compiled while
    serving is a stall of every stream: the warm-up should leave none to compile)."""
    from types import SimpleNamespace

    from clawdbot.services.inference.kernels import _triton_attention, _triton_int4_matmul, fused

    kernels: dict[str, Any] = {}
    for module in (_triton_attention, _triton_int4_matmul, SimpleNamespace(**vars(fused._kernels()))):
        kernels |= {name: fn for name, fn in vars(module).items() if hasattr(fn, "device_caches")}
    counts = {}
    for name, fn in kernels.items():
        try:
            counts[name] = sum(len(cache[0]) for cache in fn.device_caches.values())
        except (TypeError, IndexError):  # another Triton's cache layout: not counted
            continue
    return counts


def step_timeline(engine: Engine, origin: list[float]) -> list[dict[str, Any]]:
    """Per step, in ms after origin[0]: when its launch began and ended, when its tokens were read,
    and its size; filled as the engine runs (instance attributes shadow the engine's methods)."""
    steps: list[dict[str, Any]] = []
    launch, record = engine._launch, engine.metrics.step

    def timed_launch() -> Any:
        begun = time.perf_counter()
        flight = launch()
        if flight is not None:
            steps.append(
                {
                    "launch_ms": round((begun - origin[0]) * 1e3, 2),
                    "launched_ms": round((time.perf_counter() - origin[0]) * 1e3, 2),
                    "tokens": flight.batch.num_tokens,
                    "seqs": len(flight.batch.seqs),
                    "prefill_seqs": sum(1 for n in flight.batch.num_new if n > 1),
                }
            )
        return flight

    resolved = itertools.count()  # steps are read in the order they were launched

    def timed_record(preemptions: int, tokens: int, seconds: float) -> None:
        index = next(resolved)
        if index < len(steps):
            steps[index]["read_ms"] = round((time.perf_counter() - origin[0]) * 1e3, 2)
        record(preemptions, tokens, seconds)

    engine._launch = timed_launch
    engine.metrics.step = timed_record
    return steps


def allocator_counts() -> dict[str, int]:
    """CUDA caching-allocator events: a cudaMalloc / cudaFree or an out-of-memory retry (which
    frees the cache and synchronizes the device) while serving would be a stall."""
    stats = torch.cuda.memory_stats()
    keys = ("num_alloc_retries", "num_device_alloc", "num_device_free", "num_ooms")
    return {key: int(stats.get(key, 0)) for key in keys}


async def ours(folder: Path, quant: str) -> dict[str, Any]:
    """One weight format through the service's engine: single stream, then 256 concurrent."""
    prompts = make_prompts(CONCURRENT, PROMPT, 32000, seed=1)
    engine = engine_for(folder, quant)
    try:
        await warm_up(engine)  # the service's own: compiles the prefill kernels before timing
        before = compiled_variants()
        single = await load_test(engine, prompts[:1], OUTPUT, f"s-{quant}")
        origin = [time.perf_counter()]
        timeline = step_timeline(engine, origin)
        allocator = allocator_counts()
        loaded = await load_test(engine, prompts, OUTPUT, f"b-{quant}")
        allocator = {k: v - allocator[k] for k, v in allocator_counts().items()}
        after = compiled_variants()
        return {
            "kernels_compiled_while_timed": {
                k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)
            },
            "single_stream": single,
            "concurrent_256": loaded,
            "first_steps_of_the_256_load": timeline[:16],
            "allocator_during_the_256_load": allocator,
            "kv_capacity_tokens": engine.capacity_tokens,
            "graph_buckets": engine.runner.decode_graphs.buckets if engine.runner.decode_graphs else None,
        }
    finally:
        engine.stop()


CORE_COUNTERS = {
    "clawdbot_inference_step_seconds_count": "steps",
    "clawdbot_inference_device_wait_seconds_total": "device_wait_s",
    "clawdbot_inference_generation_tokens_total": "tokens",
}


async def core_counters(client: EngineClient) -> dict[str, float]:
    """The core's step count, device wait and tokens so far (from its Prometheus exposition)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = await client.metrics_text(timeout=10.0)
    return {
        CORE_COUNTERS[sample.name]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in CORE_COUNTERS
    }


async def core_load(
    client: EngineClient, seed: int, quant: str, pace: float, groundings: list[str] | None = None
) -> dict[str, Any]:
    """One 256-request load on fresh prompts (no prefix-cache hits), with what the core did meanwhile:
    its steps, the share of its wall time spent waiting for the device (near 1: the GPU sets the
    pace; near 0: the host does) and its CPU seconds."""
    prompts = make_prompts(CONCURRENT, PROMPT, 32000, seed=seed)
    before, cpu_before = await core_counters(client), process_cpu_seconds(client.process.pid)["server"]
    tag = f"b{seed}-{quant}" + ("-grounded" if groundings else "")
    result = await load_test(client, prompts, OUTPUT, tag, pace, groundings)
    after, cpu_after = await core_counters(client), process_cpu_seconds(client.process.pid)["server"]
    steps = after["steps"] - before["steps"]
    result["consumer_pace_ms"] = pace * 1e3
    result["core_steps"] = int(steps)
    result["core_device_wait_share"] = round(
        (after["device_wait_s"] - before["device_wait_s"]) / result["seconds"], 3
    )
    result["core_cpu_s"] = round(cpu_after - cpu_before, 3)
    return result


def core_settings(folder: Path, quant: str, **overrides: Any) -> InferenceSettings:
    """The service's settings for the 256-request load on the GPU."""
    return InferenceSettings(
        model=folder,
        quantization=quant,
        device="cuda",
        max_num_seqs=CONCURRENT,
        max_num_batched_tokens=8192,
        max_waiting=1024,
        **overrides,
    )


async def ours_core(folder: Path, quant: str, **overrides: Any) -> dict[str, Any]:
    """The load of `ours` with the engine in its core process, as `clawdbot serve inference` runs it:
    three loads read token by token, then two read as the paced gRPC streams do (every 20 ms)."""
    prompts = make_prompts(CONCURRENT, PROMPT, 32000, seed=1)
    client = await EngineClient.spawn(core_settings(folder, quant, **overrides))  # loaded and warmed up
    try:
        single = await load_test(client, prompts[:1], OUTPUT, f"s-{quant}")
        loads = [await core_load(client, seed, quant, 0.0) for seed in (1, 2, 3)]
        paced = [await core_load(client, seed, quant, 0.02) for seed in (4, 5)]
        return {
            "single_stream": single,
            "concurrent_256": loads[0],
            "concurrent_256_repeats": loads[1:],
            "concurrent_256_paced_consumer": paced,
            "engine_pid": client.process.pid,
        }
    finally:
        await client.stop()


def order_record(seed: int) -> str:
    """~250 characters of an order's facts with a few dozen numbers (ids, dates, money, phone)."""
    draw = random.Random(seed)
    order, tracking = draw.randrange(10**13, 10**14), draw.randrange(10**12, 10**13)
    price, count = draw.randrange(1000, 99999) / 100, draw.randrange(1, 9)
    day = f"2026-{draw.randrange(1, 13):02d}-{draw.randrange(1, 29):02d}"
    return (
        f"订单号 {order}，下单 {day} {draw.randrange(24):02d}:{draw.randrange(60):02d}，商品 {count} 件，"
        f"单价 {price:.2f} 元，实付 {price * count:.2f} 元。运单 SF{tracking}，预计 {draw.randrange(1, 31)} 日送达。"
        f"Order {order} placed {day}; {count} x item {draw.randrange(10**5, 10**6)} at {price:.2f}, "
        f"paid {price * count:.2f}. Tracking SF{tracking}. Support 400-{draw.randrange(100, 999)}-"
        f"{draw.randrange(1000, 9999)}, room {draw.randrange(100, 999)}, code {draw.randrange(10**5, 10**6)}."
    )


def grounded_copy(folder: Path) -> Path:
    """The same weights (symlinked) with a word-level tokenizer.json whose ids 15-24 are the digits."""
    copy = folder.parent / f"{folder.name}-grounded"
    copy.mkdir(exist_ok=True)
    for item in folder.iterdir():
        target = copy / item.name
        if not target.exists():
            target.symlink_to(item.resolve())
    return write_digit_tokenizer(copy)


async def grounded_core(folder: Path, quant: str) -> dict[str, Any]:
    """core-int4's load with every request grounded vs the same load ungrounded, one core process."""
    client = await EngineClient.spawn(core_settings(grounded_copy(folder), quant))
    try:
        assert client.info.grounding, "the core cannot ground: no digit tokens"
        prompts = make_prompts(CONCURRENT, PROMPT, 32000, seed=1)
        single = {
            "off": await load_test(client, prompts[:1], OUTPUT, f"s-{quant}-off"),
            "on": await load_test(client, prompts[:1], OUTPUT, f"s-{quant}-on", groundings=[order_record(0)]),
        }
        loads: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for seed in (1, 2, 3):
            records = [order_record(1000 * seed + i) for i in range(CONCURRENT)]
            order = ("off", "on") if seed % 2 else ("on", "off")
            for mode in order:
                grounding = records if mode == "on" else None
                loads[mode].append(await core_load(client, seed, f"{quant}-{mode}", 0.0, grounding))
        rates = {
            mode: statistics.median(r["output_tokens_per_s"] for r in runs) for mode, runs in loads.items()
        }
        single_ms = {mode: r["decode_ms_per_token"] for mode, r in single.items()}
        return {
            "single_stream": single,
            "concurrent_256": loads,
            "tokens_per_s_median": rates,
            "on_vs_off_tokens_per_s": round(rates["on"] / rates["off"], 4),
            "single_stream_on_vs_off_ms_per_token": (
                round(single_ms["on"] / single_ms["off"], 4) if single_ms["on"] and single_ms["off"] else None
            ),
            "grounding_chars": statistics.mean(len(order_record(i)) for i in range(CONCURRENT)),
            "engine_pid": client.process.pid,
        }
    finally:
        await client.stop()


def long_context_copy(folder: Path, context: int) -> Path:
    """The same weights (symlinked) with a longer max_position_embeddings."""
    long_folder = folder.parent / f"{folder.name}-ctx{context}"
    if not long_folder.exists():
        long_folder.mkdir()
        for item in folder.iterdir():
            if item.name != "config.json":
                (long_folder / item.name).symlink_to(item)
        config = json.loads((folder / "config.json").read_text())
        config["max_position_embeddings"] = context
        (long_folder / "config.json").write_text(json.dumps(config))
    return long_folder


async def long_generation(folder: Path, length: int = 32768) -> dict[str, Any]:
    """One request generating `length` tokens; KV blocks in use every 1,024 tokens."""
    long_folder = long_context_copy(folder, length + 1024)
    settings = InferenceSettings(model=long_folder, quantization="int4", device="cuda", max_num_seqs=4)
    engine, _ = build_engine(settings)
    engine.start()
    try:
        params = SamplingParams(temperature=0.0, max_tokens=length, ignore_eos=True)
        queue = engine.submit(Sequence("long", make_prompts(1, PROMPT, 32000, seed=5)[0], params))
        samples: list[tuple[int, int]] = []
        produced = 0
        start = time.perf_counter()
        while True:
            event = await queue.get()
            before = produced
            produced += len(event.tokens)
            if produced // 1024 != before // 1024:
                samples.append((produced, engine.blocks.num_used()))
            if event.finish is not None or event.error is not None:
                break
        elapsed = time.perf_counter() - start
    finally:
        engine.stop()
    # Samples taken while the request was still running (the last one may follow its release).
    after_window = [blocks for tokens, blocks in samples if 4096 + 1024 <= tokens < length]
    return {
        "tokens": produced,
        "seconds": round(elapsed, 1),
        "ms_per_token": round(elapsed / max(1, produced) * 1e3, 3),
        "blocks_in_use_every_1024": samples,
        "flat_after_window": len(set(after_window)) <= 2 and max(after_window) - min(after_window) <= 1,
    }


@torch.inference_mode()
def hf_generate(model: Any, prompts: list[list[int]], gen: int) -> dict[str, Any]:
    """transformers `generate()` on CUDA inputs: greedy, exactly `gen` new tokens, synchronised timing."""
    ids = torch.tensor(prompts, device="cuda")
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=gen,
        min_new_tokens=gen,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens = int(out[:, ids.shape[1] :].numel())
    return {
        "requests": len(prompts),
        "seconds": round(elapsed, 3),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / elapsed, 1),
        "ms_per_decode_step": round(elapsed / gen * 1e3, 2),
    }


def hf_numbers(folder: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16).cuda().eval()
    prompts = make_prompts(CONCURRENT, PROMPT, 32000, seed=1)
    hf_generate(model, prompts[:1], 4)  # warm-up
    result = {
        "batch_1": hf_generate(model, prompts[:1], OUTPUT),
        "batch_256": hf_generate(model, prompts, OUTPUT),
    }
    del model
    torch.cuda.empty_cache()
    return result


def grpc_numbers(folder: Path, logs: Path, name: str = "grpc", extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The service as its own process; this process is the client (its own process too)."""
    from clawdbot.shared.processes import ServiceProcess, free_port

    metrics_port = free_port()
    proc = ServiceProcess(
        "inference",
        free_port(),
        args=[
            "--metrics-port",
            str(metrics_port),
            "--model",
            str(folder),
            "--quantization",
            "int4",
            "--device",
            "cuda",
            "--max-num-seqs",
            str(CONCURRENT),
            "--max-num-batched-tokens",
            "8192",
            "--max-waiting",
            "1024",
            *extra,
        ],
        log_path=logs / f"inference-service-{name}.log",
    )
    proc.start()
    try:
        asyncio.run(proc.wait_serving(100))
        result: dict[str, Any] = {"engine_before": engine_requests(metrics_port)}
        # The first burst on a fresh service is measured apart: it ran 30-100% slower than the
        # same burst a few seconds later (docs/perf.md, 7th session), and every figure below
        # comes after it.
        loads = (("cold_first_burst", 1, 1, 9), ("client_processes_1", 1, 1, 11))
        loads += (("client_processes_1_channels_4", 1, 4, 12), ("client_processes_4", 4, 1, 14))
        for key, processes, channels, seed in loads:
            before = engine_requests(metrics_port)
            cpu_before = process_cpu_seconds(proc.process.pid) if proc.process else {}
            watcher = GaugeWatcher(metrics_port) if os.environ.get("BENCH_WATCH_GAUGES") else None
            if watcher:
                watcher.start()
            client = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.grpc_client",
                    proc.target,
                    str(CONCURRENT),
                    str(PROMPT),
                    str(OUTPUT),
                    "--processes",
                    str(processes),
                    "--channels",
                    str(channels),
                    "--seed",
                    str(seed),  # fresh prompts per load: no prefix-cache hits from the last
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if watcher:
                watcher.stop()
            result[key] = (
                json.loads(client.stdout) if client.returncode == 0 else {"error": client.stderr[-2000:]}
            )
            # Every stream has ended for the client: the engine must hold no request any more.
            if watcher:
                result[key]["engine_gauges"] = watcher.changes
            after = engine_requests(metrics_port)
            result[key]["engine_after"] = {k: after[k] for k in ("running", "waiting")}
            # The engine's own TTFT (arrival in the gRPC process -> token in the core), this load only.
            count = after["ttft_count"] - before["ttft_count"]
            if count:
                result[key]["engine_ttft_ms_mean"] = round(
                    1e3 * (after["ttft_sum"] - before["ttft_sum"]) / count, 2
                )
            if proc.process:
                cpu = process_cpu_seconds(proc.process.pid)
                result[key]["server_cpu_s"] = {
                    name: round(cpu[name] - cpu_before.get(name, 0.0), 3) for name in cpu
                }
        return result
    finally:
        proc.stop()


def engine_requests(metrics_port: int) -> dict[str, float]:
    """The engine's running / waiting request gauges, read from the service's /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    wanted = {
        "clawdbot_inference_requests_running": "running",
        "clawdbot_inference_requests_waiting": "waiting",
        "clawdbot_inference_time_to_first_token_seconds_sum": "ttft_sum",
        "clawdbot_inference_time_to_first_token_seconds_count": "ttft_count",
    }
    return {
        wanted[sample.name]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted
    }


class GaugeWatcher:
    """The engine's running / waiting gauges read every ~25 ms while a load runs, kept where they
    change: [ms since start, running, waiting]. Tells a request that waits in the engine (for a
    slot) from one that has not reached it. Only with BENCH_WATCH_GAUGES=1: each scrape makes the
    service parse the core's whole exposition, ~13% of its samples at this rate (py-spy, run 24),
    so the loads it watches run slower."""

    def __init__(self, metrics_port: int) -> None:
        import threading

        self.metrics_port = metrics_port
        self.changes: list[list[float]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(10)

    def _watch(self) -> None:
        started = time.perf_counter()
        last: tuple[float, float] | None = None
        while not self._done.wait(0.025):
            try:
                now = engine_requests(self.metrics_port)
            except OSError:
                continue
            seen = (now["running"], now["waiting"])
            if seen != last:
                self.changes.append([round(1e3 * (time.perf_counter() - started)), *seen])
                last = seen


def process_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU seconds of the service process ("server") and of its children ("core")."""
    tick = os.sysconf("SC_CLK_TCK")

    def seconds(one: int) -> float:
        with open(f"/proc/{one}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    result = {"server": seconds(pid)}
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        for n, child in enumerate(children.read().split()):
            result[f"core{n or ''}"] = seconds(int(child))
    return result


def wait_for_free_memory(fraction: float, seconds: float) -> None:
    """Until `fraction` of the card is free again (a child's CUDA context is torn down after it exits)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        free, total = torch.cuda.mem_get_info()
        if free >= fraction * total:
            return
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", default="correctness,ours,core,hf,grpc,long")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    import transformers
    import triton

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "triton": triton.__version__,
        "command": " ".join(sys.argv),
    }
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))

    def emit() -> None:
        text = json.dumps(report, indent=1)
        if args.out:
            args.out.write_text(text + "\n")

    def logs_folder() -> Path:
        return args.out.parent if args.out else work

    if args.child:
        # One section in this process (its own CUDA context): print its JSON and leave.
        folder = Path(args.folder) if args.folder else write_dummy("ref-336m", work / "ref-336m")
        name = args.child
        runners = {
            "correctness": lambda: asyncio.run(correctness(work)),
            "transformers": lambda: hf_numbers(folder),
            "ours-int4": lambda: asyncio.run(ours(folder, "int4")),
            "ours-bf16": lambda: asyncio.run(ours(folder, "none")),
            "core-int4": lambda: asyncio.run(ours_core(folder, "int4")),
            "core-int4-steps1": lambda: asyncio.run(ours_core(folder, "int4", decode_steps=1)),
            "core-grounded": lambda: asyncio.run(grounded_core(folder, "int4")),
            "grpc": lambda: grpc_numbers(folder, logs_folder(), name),
            "grpc-in-process": lambda: grpc_numbers(folder, logs_folder(), name, ("--in-process",)),
            "grpc-unpaced": lambda: grpc_numbers(folder, logs_folder(), name, UNPACED),
            "grpc-no-hold": lambda: grpc_numbers(
                folder, logs_folder(), name, ("--stream-burst-hold-ms", "0")
            ),
            "grpc20": lambda: grpc_numbers(folder, logs_folder(), name, ("--stream-interval-ms", "20")),
            "grpc-steps1": lambda: grpc_numbers(folder, logs_folder(), name, ("--decode-steps", "1")),
            "long": lambda: asyncio.run(long_generation(folder)),
        }
        if name.startswith("grpc-quiet-"):  # another decode_chain_quiet_ms, e.g. grpc-quiet-200
            quiet = ("--decode-chain-quiet-ms", name.removeprefix("grpc-quiet-"))
            runners[name] = lambda: grpc_numbers(folder, logs_folder(), name, quiet)
        if name.startswith("grpc-pacing-"):  # a pacing other than the default, e.g. grpc-pacing-160
            pacing = ("--stream-pacing-us", name.removeprefix("grpc-pacing-"))
            runners[name] = lambda: grpc_numbers(folder, logs_folder(), name, pacing)
        print(json.dumps(runners[args.child]()))
        shutil.rmtree(work, ignore_errors=True)
        return

    def section(name: str, seconds: float, folder: Path) -> None:
        """One section in a child process under a time limit, so each starts with the whole card free;
        a failure is recorded and the next section still runs."""
        wait_for_free_memory(0.8, 60)  # the previous child's memory is released asynchronously
        started = time.perf_counter()
        command = [
            sys.executable,
            "-m",
            "bench.gpu",
            "--child",
            name,
            "--folder",
            str(folder),
            "--sections",
            args.sections,
        ]
        if args.out:
            command += ["--out", str(args.out.parent / f"{name}.json")]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=seconds)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            report[name] = (
                json.loads(lines[-1]) if done.returncode == 0 and lines else {"error": done.stderr[-3000:]}
            )
        except subprocess.TimeoutExpired as exc:
            report[name] = {
                "error": f"timed out after {seconds}s",
                "stderr": (exc.stderr or b"")[-2000:].decode(errors="replace"),
            }
        report.setdefault("section_seconds", {})[name] = round(time.perf_counter() - started, 1)
        emit()

    try:
        folder = write_dummy("ref-336m", work / "ref-336m")
        limits = {"correctness": 90, "transformers": 120, "long": 150, "core-grounded": 240}
        groups = {
            "correctness": "correctness",
            "ours-int4": "ours",
            "ours-bf16": "ours",
            "core-int4": "core",
            "core-int4-steps1": "core-steps1",
            "core-grounded": "core-grounded",
            "transformers": "hf",
            "grpc": "grpc",
            "grpc-in-process": "grpc-in-process",
            "grpc-unpaced": "grpc-unpaced",
            "grpc-no-hold": "grpc-no-hold",
            "grpc20": "grpc20",
            "grpc-steps1": "grpc-steps1",
            "long": "long",
        }
        groups.update(
            {name: name for name in sorted(sections) if name.startswith(("grpc-pacing-", "grpc-quiet-"))}
        )
        for name, group in groups.items():
            if group in sections:
                section(name, limits.get(name, 120), folder)
    finally:
        emit()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
