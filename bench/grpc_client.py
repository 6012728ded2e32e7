"""Client side of the gRPC load test: N concurrent Generate streams, measured where a client sees them.

python -m bench.grpc_client HOST:PORT N PROMPT_LEN OUTPUT_LEN
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import grpc
import torch

from clawdbot.v1 import inference_pb2, inference_pb2_grpc


async def one(
    stub: inference_pb2_grpc.InferenceStub, rid: str, prompt: list[int], output: int, start: float
) -> tuple[int, float, int]:
    request = inference_pb2.GenerateRequest(
        request_id=rid,
        prompt_token_ids=prompt,
        sampling=inference_pb2.SamplingParams(temperature=0.0, max_tokens=output, ignore_eos=True),
    )
    tokens, first, messages = 0, -1.0, 0
    async for reply in stub.Generate(request, timeout=600):
        if first < 0 and reply.token_ids:
            first = time.perf_counter() - start
        tokens += len(reply.token_ids)
        messages += 1
    return tokens, first, messages


async def main(target: str, count: int, prompt_len: int, output: int) -> dict[str, object]:
    prompts = torch.randint(
        3, 32000, (count, prompt_len), generator=torch.Generator().manual_seed(11)
    ).tolist()
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        await one(stub, "warm", prompts[0][:8], 4, time.perf_counter())
        start = time.perf_counter()
        results = await asyncio.gather(*(one(stub, f"g{i}", p, output, start) for i, p in enumerate(prompts)))
        elapsed = time.perf_counter() - start
    tokens = sum(r[0] for r in results)
    ttft = sorted(r[1] for r in results)
    return {
        "streams": count,
        "seconds": round(elapsed, 3),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / elapsed, 1),
        "ttft_ms_p50": round(ttft[len(ttft) // 2] * 1e3, 2),
        "ttft_ms_p99": round(ttft[min(len(ttft) - 1, int(0.99 * (len(ttft) - 1)))] * 1e3, 2),
        "tokens_per_message_mean": round(statistics.mean(r[0] / max(1, r[2]) for r in results), 2),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))))
