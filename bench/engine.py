"""Benchmark the inference engine against transformers `generate()` on the same weights.

    python bench/engine.py --dummy ref-336m --num-requests 8 --prompt-len 128 --gen-len 32
    python bench/engine.py --model DIR --quantization int4

Prints one JSON object: offline throughput for N requests submitted together and single-stream
latency (time to first token, inter-token latency), for our engine and for transformers (batch of
N with its static batching, and batch 1), greedy, EOS ignored, in the same process and run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from clawdbot.services.inference.dummy import write_dummy
from clawdbot.services.inference.engine import Engine, EngineConfig
from clawdbot.services.inference.events import StepEvent
from clawdbot.services.inference.model.loader import load_model, resolve_dtype
from clawdbot.services.inference.sequence import SamplingParams, Sequence


def make_prompts(count: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (count, length), generator=generator).tolist()


async def _drain(queue: asyncio.Queue[StepEvent]) -> tuple[int, list[float]]:
    """(tokens, arrival time of each token) of one request."""
    count, times = 0, []
    while True:
        event = await queue.get()
        now = time.perf_counter()
        count += len(event.tokens)
        times.extend([now] * len(event.tokens))
        if event.finish is not None or event.error is not None:
            return count, times


async def run_ours(engine: Engine, prompts: list[list[int]], gen_len: int) -> dict[str, Any]:
    params = SamplingParams(temperature=0.0, max_tokens=gen_len, ignore_eos=True)
    start = time.perf_counter()
    queues = [engine.submit(Sequence(f"b{start}-{i}", list(p), params)) for i, p in enumerate(prompts)]
    results = await asyncio.gather(*(_drain(q) for q in queues))
    elapsed = time.perf_counter() - start
    tokens = sum(c for c, _ in results)
    first = [times[0] - start for _, times in results if times]
    gaps = [b - a for _, times in results for a, b in itertools.pairwise(times)]
    return {
        "requests": len(prompts),
        "seconds": round(elapsed, 3),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / elapsed, 2),
        "total_tokens_per_s": round((tokens + sum(map(len, prompts))) / elapsed, 2),
        "ttft_s_mean": round(statistics.mean(first), 4) if first else None,
        "itl_s_mean": round(statistics.mean(gaps), 4) if gaps else None,
    }


@torch.inference_mode()
def run_hf(model: Any, prompts: list[list[int]], gen_len: int) -> dict[str, Any]:
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=gen_len, min_new_tokens=gen_len, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    ids = torch.tensor(prompts)  # equal lengths: no padding needed
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    elapsed = time.perf_counter() - start
    tokens = int(out[:, ids.shape[1] :].numel())
    result = {
        "requests": len(prompts),
        "seconds": round(elapsed, 3),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / elapsed, 2),
        "total_tokens_per_s": round((tokens + ids.numel()) / elapsed, 2),
    }
    if len(prompts) == 1:  # split prefill from decode for the latency view
        t0 = time.perf_counter()
        model(ids)
        prefill = time.perf_counter() - t0
        result["ttft_s_mean"] = round(prefill, 4)
        result["itl_s_mean"] = round((elapsed - prefill) / max(1, gen_len - 1), 4)
    return result


def weight_bytes(model: torch.nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.model) if args.model else write_dummy(args.dummy, tempfile.mkdtemp(prefix="bench-"))
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, config = load_model(folder, device=device, dtype=args.dtype, quantization=args.quantization)
    engine = Engine(
        model,
        config,
        EngineConfig(
            block_size=16,
            kv_cache_bytes=int(args.kv_cache_gb * (1 << 30)),
            max_num_seqs=max(args.num_requests, 1),
            max_num_batched_tokens=args.max_num_batched_tokens,
        ),
        device,
        dtype,
    )
    prompts = make_prompts(args.num_requests, args.prompt_len, config.vocab_size)
    engine.start()
    try:
        await run_ours(engine, make_prompts(1, 8, config.vocab_size, seed=9), 2)  # warm-up
        ours_offline = await run_ours(engine, prompts, args.gen_len)
        ours_single = await run_ours(engine, prompts[:1], args.gen_len)
    finally:
        engine.stop()
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "device": args.device,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "torch_threads": torch.get_num_threads(),
        "model": args.model or f"dummy:{args.dummy}",
        "quantization": args.quantization,
        "dtype": str(dtype).removeprefix("torch."),
        "weights_bytes": weight_bytes(model),
        "num_requests": args.num_requests,
        "prompt_len": args.prompt_len,
        "gen_len": args.gen_len,
        "ours": {"offline": ours_offline, "single_stream": ours_single},
    }
    del model, engine
    if not args.skip_hf:
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(device).eval()
        run_hf(hf, make_prompts(1, 8, config.vocab_size, seed=9), 2)
        report["transformers"] = {
            "offline": run_hf(hf, prompts, args.gen_len),
            "single_stream": run_hf(hf, prompts[:1], args.gen_len),
        }
        ours_tps = ours_offline["output_tokens_per_s"]
        report["speedup_offline"] = round(
            ours_tps / report["transformers"]["offline"]["output_tokens_per_s"], 2
        )
        report["speedup_single_stream"] = round(
            ours_single["output_tokens_per_s"]
            / report["transformers"]["single_stream"]["output_tokens_per_s"],
            2,
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model folder (config.json + safetensors)")
    source.add_argument("--dummy", choices=["tiny", "ref-336m"], help="named shape with random weights")
    parser.add_argument("--quantization", choices=["none", "int4"], default="none")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--num-requests", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--gen-len", type=int, default=64)
    parser.add_argument("--max-num-batched-tokens", type=int, default=512)
    parser.add_argument("--kv-cache-gb", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--skip-hf", action="store_true", help="only our engine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
