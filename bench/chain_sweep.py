"""Chained decode steps against one step a launch, by batch size: the engine in-process on the GPU.

    python -m bench.chain_sweep --out sweep.json [--steps 1,2,4,8] [--batches 1,16,64,256]

For each `decode_steps`, in a process of its own (the card's memory is the engine's), one engine (ref-336m random weights, INT4, the service's warm-up), then
per batch size one load (prompt 128, output 256, greedy, ignore_eos, fresh prompts), consumed in
this process. Prints JSON: tokens/s, TTFT, and milliseconds per token from each request's first
token to its last (a chain delivers its tokens together, so gaps between arrivals say little).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.engine import make_prompts
from bench.gpu import OUTPUT, PROMPT, engine_for, load_test
from clawdbot.services.inference.builder import warm_up
from clawdbot.services.inference.dummy import write_dummy


async def sweep(folder: Path, steps: int, batches: list[int]) -> dict[str, Any]:
    engine = engine_for(folder, "int4", decode_steps=steps)
    try:
        await warm_up(engine)
        result = {}
        for n, batch in enumerate(batches):
            prompts = make_prompts(batch, PROMPT, 32000, seed=50 + n)
            result[f"batch_{batch}"] = await load_test(engine, prompts, OUTPUT, f"k{steps}-b{batch}")
        return result
    finally:
        engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1,4")
    parser.add_argument("--batches", default="1,16,64,256")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.folder:  # a child: one value of --steps
        print(json.dumps(asyncio.run(sweep(args.folder, int(args.steps), batches))))
        return
    with tempfile.TemporaryDirectory() as work:
        folder = write_dummy("ref-336m", Path(work) / "ref-336m")
        report: dict[str, Any] = {"command": " ".join(sys.argv)}
        for steps in args.steps.split(","):
            command = [sys.executable, "-m", "bench.chain_sweep", "--steps", steps, "--batches", args.batches]
            child = subprocess.run([*command, "--folder", str(folder)], capture_output=True, text=True)
            lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
            report[f"decode_steps_{steps}"] = (
                json.loads(lines[-1]) if lines else {"error": child.stderr[-2000:]}
            )
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
