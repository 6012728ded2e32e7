"""Where the engine core's time goes under the 256-stream load, sampled by py-spy.

    python -m bench.core_profile --out core-profile.json [--loads 6] [--native] [--quantization int4]

Spawns the engine core as the service does (`EngineClient`, ref-336m random weights), runs
`--loads` 256-request loads back to back (prompt 128, output 256, fresh prompts each), and records
the core process with py-spy meanwhile (`--nonblocking`; py-spy must be on PATH). Prints one JSON
object: each load's throughput and the core's device-wait share (as in `bench.gpu`'s core
section), then the engine thread's samples by its step's phases (inclusive) and by leaf function
(self), as shares of the engine thread's samples.

What it is for: the core was host-bound in run 32 (it waited for the device 1-11% of its time) at
3.5-4.4 ms a step, where the same step's Python takes ~1.4 ms on the CPU box with a null forward;
this names the phases that cost it on the device's own host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.gpu import OUTPUT, PROMPT, core_load, core_settings
from clawdbot.services.inference.dummy import write_dummy
from clawdbot.services.inference.engine_client import EngineClient

# The engine step's phases, by the function that runs each (py-spy names methods Class.method);
# a sample counts for the innermost one on its stack.
PHASES = (
    "Engine._launch",  # the rest of a launch: locking, the metrics gauges
    "Scheduler.schedule",
    "ModelRunner.prepare",
    "ModelRunner.launch",  # the device calls: graph replay or eager forward, copies
    "ModelRunner.sampling_tensors",
    "sample",
    "Scheduler.advance",
    "LaunchedStep.wait",
    "LaunchedStep.outputs",
    "Scheduler.resolve",
    "EngineMetrics.tokens",
    "EngineMetrics.step",
    "EngineMetrics.queue",
    "EngineMetrics.kv",
    "Engine._finish_event",
    "Engine._emit",
    "Engine._flush",
    "Engine._apply_aborts",
)


def frame_name(frame: str) -> tuple[str, str]:
    """(function, file) of one of py-spy's frames, "function (path/file.py:line)"."""
    name, _, where = frame.partition(" (")
    return name, where.rsplit(":", 1)[0]


def phase_of(frames: list[str]) -> str:
    """The innermost of our phases a stack is in (frames outermost first), or "other"."""
    for frame in reversed(frames):
        name, where = frame_name(frame)
        if name in PHASES and "inference" in where:
            return name
    return "other"


def in_step(frames: list[str]) -> bool:
    """A sample of the engine thread inside `Engine.step` (not idle between loads)."""
    return any(frame.startswith("Engine.step (") for frame in frames)


def summarise(raw: str, top: int = 30) -> dict[str, Any]:
    """py-spy's collapsed stacks ("frame;frame;... count") reduced to the engine thread's phases."""
    phases: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        if not in_step(frames):
            continue  # another thread, or the engine thread idle between loads
        count = int(count_text)
        total += count
        phases[phase_of(frames)] += count
        name, where = frame_name(frames[-1])
        leaves[f"{name} ({where.rsplit('/', 1)[-1]})"] += count
    share = {name: round(n / total, 3) for name, n in phases.most_common()} if total else {}
    return {
        "engine_thread_samples": total,
        "phase_share": share,
        "leaf_share": {name: round(n / total, 3) for name, n in leaves.most_common(top)} if total else {},
    }


async def profile(folder: Path, quantization: str, loads: int, native: bool, rate: int) -> dict[str, Any]:
    client = await EngineClient.spawn(core_settings(folder, quantization))
    raw = Path(tempfile.mkdtemp()) / "core.txt"
    spy = shutil.which("py-spy")
    recorder = None
    if spy:
        command = [spy, "record", "--pid", str(client.process.pid), "--format", "raw", "--output", str(raw)]
        command += ["--rate", str(rate), "--nonblocking", "--threads"] + (["--native"] if native else [])
        recorder = await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        await asyncio.sleep(2.0)  # py-spy attaches
    try:
        results = [await core_load(client, 100 + n, quantization, 0.0) for n in range(loads)]
    finally:
        errors = b""
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)  # py-spy writes what it has
            _, errors = await asyncio.wait_for(recorder.communicate(), 60)
        await client.stop()
    summary: dict[str, Any] = {"loads": results}
    if recorder is None:
        summary["py_spy"] = "not on PATH"
    elif raw.exists():
        summary |= summarise(raw.read_text())
    else:
        summary["py_spy_error"] = errors.decode(errors="replace")[-2000:]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=6)
    parser.add_argument("--quantization", default="int4")
    parser.add_argument("--native", action="store_true", help="py-spy --native: C/C++ frames too")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples a second")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        folder = write_dummy("ref-336m", Path(work) / "ref-336m")
        result = {
            "command": " ".join(sys.argv),
            "prompt": PROMPT,
            "output": OUTPUT,
            **asyncio.run(profile(folder, args.quantization, args.loads, args.native, args.rate)),
        }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
