"""Memory benchmark: Append and GetContext latency/throughput through gRPC, JSON on stdout.

    python -m clawdbot.services.memory.bench --backend redis --appends 2000 --concurrency 16

`--backend redis` starts a private redis-server (the deployment's config, AOF everysec) in a
temporary directory; the service runs in this process, as in the integration tests, so client
and server share the CPU: the numbers are a floor for a dedicated host, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from clawdbot.services.memory.testing import Backend, RedisServer, chat_message, open_memory
from clawdbot.v1 import memory_pb2


def _summary(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "calls": len(ordered),
        "per_second": round(len(ordered) / wall, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


async def _timed(calls: int, concurrency: int, call: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for n in counter:
            started = time.perf_counter()
            await call(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _summary(latencies, time.perf_counter() - started)


async def run(backend_name: str, appends: int, concurrency: int, history: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start() if backend_name == "redis" else None
        try:
            if redis is not None:
                await redis.wait_ready()
            backend = Backend(backend_name, redis.url if redis else None)
            async with open_memory(backend, log_level="ERROR") as memory:
                text = "How do I return an order that arrived damaged? " * 8  # ~100 tokens

                async def append(n: int) -> None:
                    message = chat_message(f"m{n}-{uuid.uuid4().hex[:6]}", text=text, tokens=100)
                    key = memory.key(f"s{n % 64}")
                    await memory.stub.Append(memory_pb2.AppendRequest(key=key, messages=[message]))

                append_stats = await _timed(appends, concurrency, append)
                long_key = memory.key("long")
                for start in range(0, history, 50):
                    batch = [
                        chat_message(f"h{i}", text=text, tokens=100)
                        for i in range(start, min(history, start + 50))
                    ]
                    await memory.stub.Append(
                        memory_pb2.AppendRequest(key=long_key, messages=batch, max_messages=history)
                    )

                async def context(n: int) -> None:
                    await memory.stub.GetContext(
                        memory_pb2.GetContextRequest(key=long_key, token_budget=2048)
                    )

                context_stats = await _timed(max(200, appends // 4), concurrency, context)
        finally:
            if redis is not None:
                redis.stop()
    return {
        "benchmark": "memory",
        "backend": backend_name,
        "concurrency": concurrency,
        "append_1_message": append_stats,
        "get_context": {"history_messages": history, "token_budget": 2048, **context_stats},
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--history", type=int, default=200, help="Messages in the session GetContext reads.")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.backend, args.appends, args.concurrency, args.history)), indent=2))


if __name__ == "__main__":
    main()
