"""The inference gRPC server's own cost under the 256-stream load, without a model or a GPU.

    python -m bench.grpc_server_cost [--pacing-us 160,0] [--burst-hold-ms 200,0] [--step-ms 4] [--runs 3]

Serves the real `InferenceServicer` in the real `ServiceHost` (interceptors, tracing setup, health)
in a process of its own, over `PacedEngine`: a stand-in that gives every live request one token
each `--step-ms` and admits at most 64 new requests a step (the GPU runs' prompt budget of 8,192
tokens in 128-token prompts). `bench.grpc_client` then runs 256 streams (prompt 128, output 256)
from one client process, `--runs` times per pacing and burst hold. Prints one JSON object: per
pair, what the client measured and the CPU seconds the server process spent on each run.

What it is for: on a CPU box, the server's share of gRPC TTFT and throughput (the 2-core workspace
reproduced the GPU host's second-long TTFT tail without pacing, docs/perf.md) and a place to try a
change to the gRPC path before spending device time on it. What it is not: the engine's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from bench.gpu import process_cpu_seconds
from clawdbot.services.inference.config import ModelConfig, parse_config
from clawdbot.services.inference.dummy import COMMON, SHAPES
from clawdbot.services.inference.events import StepEvent, TokenOutput
from clawdbot.services.inference.sequence import Finish, Sequence
from clawdbot.services.inference.server import InferenceServicer
from clawdbot.services.inference.settings import InferenceSettings
from clawdbot.services.inference.validation import Limits
from clawdbot.shared.grpc_server import ServiceHost
from clawdbot.shared.processes import free_port
from clawdbot.v1 import inference_pb2, inference_pb2_grpc

ADMIT_PER_STEP = 64


class PacedEngine:
    """What the servicer needs of an engine, giving tokens at a fixed step cadence."""

    def __init__(self, step_seconds: float) -> None:
        self.config: ModelConfig = parse_config({**SHAPES["ref-336m"], **COMMON})
        self.step_seconds = step_seconds
        self._waiting: list[tuple[Sequence, asyncio.Queue[StepEvent]]] = []
        self._live: dict[str, tuple[Sequence, asyncio.Queue[StepEvent]]] = {}
        self._task = asyncio.get_running_loop().create_task(self._steps())

    def submit(self, seq: Sequence) -> asyncio.Queue[StepEvent]:
        queue: asyncio.Queue[StepEvent] = asyncio.Queue()
        self._waiting.append((seq, queue))
        return queue

    def abort(self, request_id: str) -> None:
        self._live.pop(request_id, None)

    async def _steps(self) -> None:
        while True:
            await asyncio.sleep(self.step_seconds)
            admitted, self._waiting = self._waiting[:ADMIT_PER_STEP], self._waiting[ADMIT_PER_STEP:]
            self._live.update((seq.request_id, (seq, queue)) for seq, queue in admitted)
            for request_id, (seq, queue) in list(self._live.items()):
                seq.token_ids.append(7)
                done = seq.num_output >= seq.params.max_tokens
                queue.put_nowait(
                    StepEvent(
                        tokens=[TokenOutput(7)],
                        finish=Finish.LENGTH if done else None,
                        prompt_tokens=seq.num_prompt,
                        completion_tokens=seq.num_output,
                    )
                )
                if done:
                    del self._live[request_id]


async def serve(port: int, pacing_us: float, step_ms: float, burst_hold_ms: float) -> None:
    settings = InferenceSettings(
        port=port, log_level="WARNING", stream_pacing_us=pacing_us, stream_burst_hold_ms=burst_hold_ms
    )
    host = ServiceHost("inference", settings)
    servicer = InferenceServicer(
        stream_interval=settings.stream_interval_ms / 1000,
        stream_pacing=pacing_us / 1e6,
        burst_hold=settings.stream_burst_hold_ms / 1000,
    )
    host.add_service(
        "clawdbot.v1.Inference",
        lambda server: inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server),
    )
    await host.start()
    limits = Limits(block_size=16, num_blocks=1 << 20, full_attention=False)
    servicer.bind(PacedEngine(step_ms / 1000), inference_pb2.ModelInfoResponse(), limits)
    await host.set_serving(True)
    print("ready", flush=True)
    await asyncio.Event().wait()


def measure(pacing_us: float, step_ms: float, burst_hold_ms: float, runs: int) -> dict[str, Any]:
    port = free_port()
    command = [sys.executable, "-m", "bench.grpc_server_cost", "--serve", str(port)]
    server = subprocess.Popen(
        [
            *command,
            "--pacing-us",
            str(pacing_us),
            "--step-ms",
            str(step_ms),
            "--burst-hold-ms",
            str(burst_hold_ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("the server did not start")
        results = []
        for run in range(runs):
            before = process_cpu_seconds(server.pid)["server"]
            load = [f"127.0.0.1:{port}", "256", "128", "256", "--seed", str(100 + run)]
            client = subprocess.run(
                [sys.executable, "-m", "bench.grpc_client", *load],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            result = json.loads(client.stdout)
            result.pop("slow_streams", None)
            result["server_cpu_s"] = round(process_cpu_seconds(server.pid)["server"] - before, 3)
            results.append(result)
        return {"pacing_us": pacing_us, "burst_hold_ms": burst_hold_ms, "runs": results}
    finally:
        server.kill()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pacing-us", default="160,0", help="comma-separated --stream-pacing-us values")
    parser.add_argument("--step-ms", type=float, default=4.0, help="the stand-in engine's step time")
    parser.add_argument(
        "--burst-hold-ms", default="200", help="comma-separated --stream-burst-hold-ms values"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve, float(args.pacing_us), args.step_ms, float(args.burst_hold_ms)))
        return
    report = {
        "cpu": os.uname().machine,
        "cores": os.cpu_count(),
        "step_ms": args.step_ms,
        "command": " ".join(sys.argv),
        "loads": [
            measure(float(pacing), args.step_ms, float(hold), args.runs)
            for pacing in args.pacing_us.split(",")
            for hold in args.burst_hold_ms.split(",")
        ],
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
