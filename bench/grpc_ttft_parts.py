"""Where a gRPC stream's time to first token goes, stage by stage, under a burst from one client.

    python -m bench.grpc_ttft_parts [--runs 5] [--streams 256] [--profile] -- SERVICE_ARGS...

Starts `clawdbot serve inference SERVICE_ARGS` with a recorder wrapped around the servicer and the
engine handle, then sends `--runs` bursts of `--streams` Generate calls from this process over one
channel (the one-client case of `bench.gpu`'s gRPC section). Every stream gets wall-clock stamps
(one clock for both processes, one machine):

- `call`: the client starts the call;
- `entry`: the servicer's `Generate` begins (the call is accepted and its request read);
- `submitted`: the request is handed to the engine;
- `arrived`: its first event reaches the gRPC process (the engine core's prompt step and the wire);
- `ready`: the servicer has the first message built;
- `sent`: grpc has taken that message;
- `first`: the client reads the first token.

Prints one JSON object: per run, the p50 / p99 of each stamp after the burst's start and of each
stage (the difference of two stamps), and with `--profile` (py-spy on PATH) the gRPC process's
busiest frames over all runs. What it is for: choosing what to change on the gRPC path by what it
costs, rather than by guess (the 6th session saw 90 ms between the engine's TTFT and the client's).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc

from bench.grpc_client import prompts_for
from clawdbot.v1 import inference_pb2, inference_pb2_grpc

STAMPS = ("call", "entry", "submitted", "arrived", "ready", "sent", "first")


def serve(record_path: Path, args: list[str], tweaks: list[str]) -> None:
    """The service, with every stream's server-side stamps kept and written out on SIGUSR1.

    `tweaks`, to weigh a change against what was there before: `asyncio` (asyncio's event loop,
    not uvloop), `otel-interceptor` (OpenTelemetry's server interceptor on every call, exported or
    not, instead of `ServerTracing`), `no-interceptors` (none at all).
    """
    from clawdbot.services.inference import engine_client, server
    from clawdbot.shared import cli, grpc_server

    if "asyncio" in tweaks:
        os.environ["CLAWDBOT_EVENT_LOOP"] = "asyncio"
    if "otel-interceptor" in tweaks:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        grpc_server.server_interceptors = lambda: [aio_server_interceptor()]
    if "no-interceptors" in tweaks:
        plain_server = grpc.aio.server
        grpc_server.grpc.aio.server = lambda interceptors=None, **kw: plain_server(**kw)  # type: ignore[assignment,misc]

    stamps: dict[str, dict[str, float]] = {}
    original_generate = server.InferenceServicer.Generate
    original_submit = engine_client.EngineClient.submit

    async def generate(
        self: server.InferenceServicer, request: inference_pb2.GenerateRequest, context: Any
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        mine = stamps.setdefault(request.request_id, {})
        mine["entry"] = time.time()
        async for message in original_generate(self, request, context):
            if "ready" not in mine:
                mine["ready"] = time.time()
                yield message
                mine["sent"] = time.time()
            else:
                yield message

    def submit(self: engine_client.EngineClient, seq: Any) -> asyncio.Queue[Any]:
        mine = stamps.setdefault(seq.request_id, {})
        mine["submitted"] = time.time()
        queue = original_submit(self, seq)
        put = queue.put_nowait

        def first_put(event: Any) -> None:
            mine.setdefault("arrived", time.time())
            put(event)

        queue.put_nowait = first_put  # type: ignore[method-assign]
        return queue

    def dump(*_: object) -> None:
        partial = record_path.with_suffix(".partial")
        partial.write_text(json.dumps(stamps))
        partial.rename(record_path)  # whole or absent for the reader
        stamps.clear()

    server.InferenceServicer.Generate = generate  # type: ignore[method-assign,assignment]
    engine_client.EngineClient.submit = submit  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["clawdbot", "serve", "inference", *args]
    cli.main()


async def burst(
    target: str, streams: int, prompt: int, output: int, seed: int, vocab: int, channels: int
) -> dict[str, dict[str, float]]:
    """One burst over `channels` connections; the client's stamps per request id (and the start)."""
    prompts = prompts_for(streams, prompt, seed, vocab)
    stamps: dict[str, dict[str, float]] = {}
    options = [("grpc.use_local_subchannel_pool", 1)]  # each channel a connection of its own
    opened = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    try:
        stubs = [inference_pb2_grpc.InferenceStub(channel) for channel in opened]

        async def one(stub: inference_pb2_grpc.InferenceStub, rid: str, ids: list[int], tokens: int) -> None:
            mine = stamps.setdefault(rid, {})
            mine["call"] = time.time()
            request = inference_pb2.GenerateRequest(
                request_id=rid,
                prompt_token_ids=ids,
                sampling=inference_pb2.SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True),
            )
            async for reply in stub.Generate(request, timeout=600):
                if reply.token_ids and "first" not in mine:
                    mine["first"] = time.time()

        for c, stub in enumerate(stubs):
            await one(stub, f"warm{seed}-{c}", prompts[0][:8], 4)
        stamps.clear()
        await asyncio.sleep(0.2)
        start = time.time()
        await asyncio.gather(
            *(one(stubs[i % channels], f"b{seed}-{i}", prompts[i], output) for i in range(streams))
        )
    finally:
        for channel in opened:
            await channel.close()
    stamps["_start"] = {"start": start}
    return stamps


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))] * 1e3, 1)


def describe(client: dict[str, dict[str, float]], server: dict[str, dict[str, float]]) -> dict[str, Any]:
    """p50 / p99 (ms) of each stamp after the start, and of each stage between two stamps."""
    start = client.pop("_start")["start"]
    rows = [{**server.get(rid, {}), **mine} for rid, mine in client.items()]
    complete = [row for row in rows if all(name in row for name in STAMPS)]
    after_start = {
        name: [percentile([row[name] - start for row in complete], q) for q in (0.5, 0.99)] for name in STAMPS
    }
    stages = {
        f"{a}->{b}": [percentile([row[b] - row[a] for row in complete], q) for q in (0.5, 0.99)]
        for a, b in itertools.pairwise(STAMPS)
    }
    return {
        "streams": len(rows),
        "complete": len(complete),
        "after_start_ms": after_start,
        "stage_ms": stages,
    }


def busiest_frames(raw: Path, top: int = 25) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares of py-spy's raw (collapsed) stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
    share = max(1, total)
    return {
        "self": [(name, round(n / share, 3)) for name, n in own.most_common(top)],
        "inclusive": [(name, round(n / share, 3)) for name, n in inclusive.most_common(top)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--output", type=int, default=256)
    parser.add_argument(
        "--channels", default="1", help="client connections (one process); a comma list alternates them"
    )
    parser.add_argument(
        "--tweaks", default="", help="comma-separated: asyncio, otel-interceptor, no-interceptors (see serve)"
    )
    parser.add_argument(
        "--variants",
        default="",
        help='";"-separated tweak lists, one service each, bursts interleaved; "TWEAKS@TREE" runs that '
        'one from another source tree ("default;asyncio,otel-interceptor;default@/tmp/before")',
    )
    parser.add_argument("--vocab", type=int, default=32000, help="prompt ids are drawn below this")
    parser.add_argument("--profile", action="store_true", help="py-spy the gRPC process during the runs")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # the service process: record path
    parser.add_argument("service_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    service_args = [a for a in args.service_args if a != "--"]
    if args.serve is not None:
        serve(Path(args.serve), service_args, args.tweaks.split(","))
        return

    variants = [v.strip() for v in args.variants.split(";") if v.strip()] or [args.tweaks or "default"]
    report: dict[str, Any] = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d")}
    report.update(compare(args, variants, service_args))
    print(json.dumps(report, indent=1))


def start_service(folder: Path, variant: str, service_args: list[str]) -> tuple[Any, Path]:
    """One recorded service process (not yet serving) and the path its stamps are written to.

    `variant` is a tweak list ("default": none), optionally with `@TREE`: the service then runs from
    that source tree (another checkout, or a copy with a change undone) instead of this one.
    """
    from clawdbot.shared.processes import ServiceProcess, free_port

    tweaks, _, tree = variant.partition("@")
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "server.json"
    proc = ServiceProcess("inference", free_port(), log_path=folder / "service.log")
    command = [
        sys.executable,
        "-m",
        "bench.grpc_ttft_parts",
        "--serve",
        str(record),
        "--tweaks",
        "" if tweaks == "default" else tweaks,
        "--",
        "--host",
        proc.host,
        "--port",
        str(proc.port),
        *service_args,
    ]
    if tree:  # `python -m` puts the working directory first on sys.path: run from the tree
        command = ["/bin/sh", "-c", f"cd {shlex.quote(tree)} && exec {shlex.join(command)}"]
    proc.command = lambda: command  # type: ignore[method-assign]
    return proc.start(), record


def compare(args: argparse.Namespace, variants: list[str], service_args: list[str]) -> dict[str, Any]:
    """Every variant's service at once (idle but for its own bursts), bursts interleaved: run 1 of
    each variant, then run 2 of each, so that a host's drift over minutes falls on all alike."""
    root = Path(tempfile.mkdtemp(prefix="ttft-parts-"))
    started = [start_service(root / f"v{i}", variant, service_args) for i, variant in enumerate(variants)]
    spy: subprocess.Popen[bytes] | None = None
    raw = root / "spy.txt"
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    result: dict[str, Any] = {}
    try:
        for proc, _ in started:
            asyncio.run(proc.wait_serving(300))
        first = started[0][0].process
        if args.profile and shutil.which("py-spy"):  # the first variant's gRPC process
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--nonblocking",
                    "-r",
                    "500",
                    "-f",
                    "raw",
                    "-o",
                    str(raw),
                    "-p",
                    str(first.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        for run in range(args.runs):
            for variant, (proc, record) in zip(variants, started, strict=True):
                for k, channels in enumerate(int(c) for c in args.channels.split(",")):
                    seed = 100 + 10 * run + k  # new prompts every burst: no prefix-cache hits
                    load = (args.streams, args.prompt, args.output, seed, args.vocab, channels)
                    client = asyncio.run(burst(proc.target, *load))
                    record.unlink(missing_ok=True)
                    os.kill(proc.process.pid, signal.SIGUSR1)
                    deadline = time.monotonic() + 10
                    while not record.exists() and time.monotonic() < deadline:
                        time.sleep(0.05)
                    parts = describe(client, json.loads(record.read_text()))
                    runs[variant].append({"channels": channels, **parts})
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            if raw.exists():
                result["profile"] = busiest_frames(raw)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        for proc, _ in started:
            proc.stop()
    # The first burst on a fresh service runs slower than the ones after it (docs/perf.md): it is
    # shown on its own, and the medians are over the rest.
    result["summary"] = {
        variant: {
            "cold_first_burst_ttft_p50_ms": variant_runs[0]["after_start_ms"]["first"][0],
            **summarize(variant_runs[1:] or variant_runs),
        }
        for variant, variant_runs in runs.items()
    }
    result["runs"] = runs
    return result


def median(values: Iterable[float]) -> float:
    return round(statistics.median(values), 1)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per client connection count: the median over runs of each run's p50 (and p99) of the main stages."""
    out: dict[str, Any] = {}
    for channels in sorted({run["channels"] for run in runs}):
        mine = [run for run in runs if run["channels"] == channels]
        out[f"channels_{channels}"] = {
            "runs": len(mine),
            "call->entry_p50_ms": median(r["stage_ms"]["call->entry"][0] for r in mine),
            "submitted->arrived_p50_ms": median(r["stage_ms"]["submitted->arrived"][0] for r in mine),
            "ttft_p50_ms": median(r["after_start_ms"]["first"][0] for r in mine),
            "ttft_p99_ms": median(r["after_start_ms"]["first"][1] for r in mine),
            "ttft_p50_ms_each_run": [r["after_start_ms"]["first"][0] for r in mine],
        }
    return out


if __name__ == "__main__":
    main()
