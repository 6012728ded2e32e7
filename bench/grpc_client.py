"""Client side of the gRPC load test: N concurrent Generate streams, measured where a client sees them.

python -m bench.grpc_client HOST:PORT N PROMPT_LEN OUTPUT_LEN [--processes P] [--channels C]

With `--processes P` the N streams are split over P client processes that start together, so a
single Python client's own event loop does not bound what is measured; the figures are then over
all streams (throughput = all tokens / common start to last end, TTFT per stream from the common
start).

The common start is a barrier, not a guess: each process connects, makes one warm-up call, says
"ready" on stdout, and only then gets the start instant on stdin. (An earlier version handed out an
instant 2.5 s ahead; client processes still importing their libraries on a busy host started late,
and every stream's TTFT carried the delay: 1.2-2.4 s TTFTs with a spread of ~50 ms.) Each process
reports how late it actually started (`start_late_ms_max`).

`--channels C` spreads each process's streams over C channels (C HTTP/2 connections), and every
process reports the CPU time it spent during the load (`client_cpu_share_max`: CPU seconds / wall
seconds of the busiest process; near 1.0 means that process, not the server, set the pace).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time

import grpc

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
    draw = random.Random(seed)
    return [[draw.randrange(3, vocab) for _ in range(prompt_len)] for _ in range(count)]


async def shard(
    target: str, indices: list[int], prompt_len: int, output: int, seed: int, vocab: int, channels: int
) -> list[dict[str, float]]:
    """Streams `indices` of the load: connect and warm up, say ready, start at the instant read from stdin."""
    prompts = prompts_for(max(indices) + 1, prompt_len, seed, vocab)
    # A local subchannel pool per channel: each channel opens a connection of its own.
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.use_local_subchannel_pool", 1)]
    opened = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    try:
        stubs = [inference_pb2_grpc.InferenceStub(channel) for channel in opened]
        for c, stub in enumerate(stubs):
            await one(stub, f"warm{indices[0]}-{c}", prompts[indices[0]][:8], 4, time.time())
        print("ready", flush=True)
        start_at = float(await asyncio.to_thread(sys.stdin.readline))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        late = time.time() - start_at
        cpu = time.process_time()
        results = await asyncio.gather(
            *(one(stubs[n % channels], f"g{i}", prompts[i], output, start_at) for n, i in enumerate(indices))
        )
        cpu_share = (time.process_time() - cpu) / max(1e-9, time.time() - start_at)
        for i, result in zip(indices, results, strict=True):
            result["late"] = late
            result["stream"] = i
            result["cpu_share"] = cpu_share
        return results
    finally:
        for channel in opened:
            await channel.close()


def summary(results: list[dict[str, float]], processes: int, channels: int) -> dict[str, object]:
    elapsed = max(r["end"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    ttft = sorted(r["first"] for r in results)
    return {
        "streams": len(results),
        "client_processes": processes,
        "channels_per_process": channels,
        "seconds": round(elapsed, 3),
        "output_tokens": int(tokens),
        "output_tokens_per_s": round(tokens / elapsed, 1),
        "ttft_ms_p50": round(ttft[len(ttft) // 2] * 1e3, 2),
        "ttft_ms_p99": round(ttft[min(len(ttft) - 1, int(0.99 * (len(ttft) - 1)))] * 1e3, 2),
        "tokens_per_message_mean": round(
            statistics.mean(r["tokens"] / max(1, r["messages"]) for r in results), 2
        ),
        "start_late_ms_max": round(max(r["late"] for r in results) * 1e3, 2),
        "ttft_ms_max": round(ttft[-1] * 1e3, 2),
        "ttft_ms_mean": round(statistics.mean(ttft) * 1e3, 2),
        "client_cpu_share_max": round(max(r["cpu_share"] for r in results), 3),
        # The tail, stream by stream (index modulo the process count = its client process):
        # [stream, first token ms, last token ms, messages] of the streams 3x slower than the median.
        "slow_streams": [
            [int(r["stream"]), round(r["first"] * 1e3, 1), round(r["end"] * 1e3, 1), int(r["messages"])]
            for r in sorted(results, key=lambda r: -r["first"])[:12]
            if r["first"] > 3 * ttft[len(ttft) // 2]
        ],
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
    parser.add_argument("--channels", type=int, default=1, help="connections per client process")
    parser.add_argument(
        "--seed", type=int, default=11, help="of the random prompts (a new seed: no prefix-cache hits)"
    )
    parser.add_argument("--vocab", type=int, default=32000, help="prompt ids are drawn below this")
    parser.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/P": this process's part
    args = parser.parse_args()
    if args.shard is not None:
        index, total = (int(x) for x in args.shard.split("/"))
        indices = list(range(index, args.count, total))
        results = asyncio.run(
            shard(args.target, indices, args.prompt_len, args.output, args.seed, args.vocab, args.channels)
        )
        print(json.dumps(results))
        return
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
                "--seed",
                str(args.seed),
                "--vocab",
                str(args.vocab),
                "--channels",
                str(args.channels),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(args.processes)
    ]
    for child in children:  # the barrier: every process connected and warmed up
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("a client process failed before it was ready")
    start_at = f"{time.time() + 0.2}\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write(start_at)
        child.stdin.flush()
    streams: list[dict[str, float]] = []
    for child in children:
        out, _ = child.communicate(timeout=600)
        if child.returncode != 0:
            raise SystemExit(f"client process failed ({child.returncode})")
        streams += json.loads(out)
    print(json.dumps(summary(streams, args.processes, args.channels)))


if __name__ == "__main__":
    main()
