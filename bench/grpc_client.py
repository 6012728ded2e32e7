"""Client side of the gRPC load test: N concurrent Generate streams, measured where a client sees them.

python -m bench.grpc_client HOST:PORT N PROMPT_LEN OUTPUT_LEN [--processes P]

With `--processes P` the N streams are split over P client processes that start together (at a
wall-clock instant handed to each), so a single Python client's own event loop does not bound
what is measured; the figures are then over all streams (throughput = all tokens / first start to
last end, TTFT per stream from the common start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time

import grpc
import torch

from clawdbot.v1 import inference_pb2, inference_pb2_grpc


async def one(
    stub: inference_pb2_grpc.InferenceStub, rid: str, prompt: list[int], output: int, start: float
) -> dict[str, float]:
    """tokens, messages, first-token and end times (seconds after `start`, wall clock) of one stream."""
    request = inference_pb2.GenerateRequest(
        request_id=rid,
        prompt_token_ids=prompt,
        sampling=inference_pb2.SamplingParams(temperature=0.0, max_tokens=output, ignore_eos=True),
    )
    tokens, first, messages = 0, -1.0, 0
    async for reply in stub.Generate(request, timeout=600):
        if first < 0 and reply.token_ids:
            first = time.time() - start
        tokens += len(reply.token_ids)
        messages += 1
    return {"tokens": tokens, "messages": messages, "first": first, "end": time.time() - start}


def prompts_for(count: int, prompt_len: int, seed: int, vocab: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (count, prompt_len), generator=generator).tolist()


async def shard(
    target: str, indices: list[int], prompt_len: int, output: int, start_at: float, seed: int, vocab: int
) -> list[dict[str, float]]:
    """Streams `indices` of the load, started at wall-clock `start_at` (after a warm-up call)."""
    prompts = prompts_for(max(indices) + 1, prompt_len, seed, vocab)
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        await one(stub, f"warm{indices[0]}", prompts[indices[0]][:8], 4, time.time())
        await asyncio.sleep(max(0.0, start_at - time.time()))
        return await asyncio.gather(*(one(stub, f"g{i}", prompts[i], output, start_at) for i in indices))


def summary(results: list[dict[str, float]], processes: int) -> dict[str, object]:
    elapsed = max(r["end"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    ttft = sorted(r["first"] for r in results)
    return {
        "streams": len(results),
        "client_processes": processes,
        "seconds": round(elapsed, 3),
        "output_tokens": int(tokens),
        "output_tokens_per_s": round(tokens / elapsed, 1),
        "ttft_ms_p50": round(ttft[len(ttft) // 2] * 1e3, 2),
        "ttft_ms_p99": round(ttft[min(len(ttft) - 1, int(0.99 * (len(ttft) - 1)))] * 1e3, 2),
        "tokens_per_message_mean": round(
            statistics.mean(r["tokens"] / max(1, r["messages"]) for r in results), 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target")
    parser.add_argument("count", type=int)
    parser.add_argument("prompt_len", type=int)
    parser.add_argument("output", type=int)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument(
        "--seed", type=int, default=11, help="of the random prompts (a new seed: no prefix-cache hits)"
    )
    parser.add_argument("--vocab", type=int, default=32000, help="prompt ids are drawn below this")
    parser.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/P": this process's part
    parser.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shard is not None:
        index, total = (int(x) for x in args.shard.split("/"))
        indices = list(range(index, args.count, total))
        results = asyncio.run(
            shard(args.target, indices, args.prompt_len, args.output, args.start_at, args.seed, args.vocab)
        )
        print(json.dumps(results))
        return
    start_at = time.time() + 2.0 + 0.5 * args.processes  # every process connected and warmed by then
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.grpc_client",
                args.target,
                str(args.count),
                str(args.prompt_len),
                str(args.output),
                "--shard",
                f"{i}/{args.processes}",
                "--start-at",
                str(start_at),
                "--seed",
                str(args.seed),
                "--vocab",
                str(args.vocab),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(args.processes)
    ]
    results: list[dict[str, float]] = []
    for child in children:
        out, _ = child.communicate(timeout=600)
        if child.returncode != 0:
            raise SystemExit(f"client process failed ({child.returncode})")
        results += json.loads(out)
    print(json.dumps(summary(results, args.processes)))


if __name__ == "__main__":
    main()
