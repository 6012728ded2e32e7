"""`clawdbot serve inference` and `clawdbot quantize SRC DST`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from clawdbot.shared.options import common_server_options


@click.command("inference")
@common_server_options(default_port=50052)
@click.option(
    "--model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Model folder.",
)
@click.option("--dummy", default=None, help="Or a named shape with random weights: tiny, ref-336m.")
@click.option("--quantization", type=click.Choice(["none", "int4"]), default=None, help="[default: none]")
@click.option("--lm-head", type=click.Choice(["16bit", "int4"]), default=None, help="[default: 16bit]")
@click.option("--device", default=None, help="cpu or cuda [default: cpu].")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default=None)
@click.option("--block-size", type=int, default=None, help="Tokens per KV block [default: 16].")
@click.option(
    "--num-kv-blocks", type=int, default=None, help="KV blocks per group [default: from --kv-cache-gb]."
)
@click.option("--kv-cache-gb", type=float, default=None, help="KV cache memory [default: 1].")
@click.option("--max-num-seqs", type=int, default=None)
@click.option("--max-num-batched-tokens", type=int, default=None)
@click.option("--max-waiting", type=int, default=None)
@click.option(
    "--decode-steps",
    type=int,
    default=None,
    help="Decode steps one launch may chain on the device (host work paid once) [default: 4; 1: off].",
)
@click.option(
    "--decode-chain-quiet-ms",
    type=float,
    default=None,
    help="No chained decode steps until no request has arrived for this long [default: 50].",
)
@click.option("--threads", type=int, default=None, help="torch intra-op threads on the CPU.")
@click.option(
    "--gpu-memory-utilization",
    type=float,
    default=None,
    help="CUDA: share of the card for weights + KV cache [default: 0.9].",
)
@click.option(
    "--stream-interval-ms",
    type=float,
    default=None,
    help="Least time between two messages of a Generate stream; tokens meanwhile go together [default: 0].",
)
@click.option(
    "--stream-pacing-us",
    type=float,
    default=None,
    help="Under load: the least time between two messages of a stream grows by this much per open "
    "stream [default: 160; 0: off].",
)
@click.option(
    "--stream-burst-hold-ms",
    type=float,
    default=None,
    help="During a burst of new calls, open streams hold their messages this long [default: 200; 0: off].",
)
@click.option(
    "--engine-process/--in-process",
    default=None,
    help="Run the engine in its own process (default) or in the gRPC server's process.",
)
def serve(config_file: Path | None, **options: Any) -> None:
    """Serve clawdbot.v1.Inference: the continuous-batching engine over a local model folder."""
    from clawdbot.services.inference.service import InferenceService
    from clawdbot.services.inference.settings import InferenceSettings
    from clawdbot.shared import event_loop

    settings = InferenceSettings.load(config_file, **options)
    event_loop.run(InferenceService(settings).run(), settings.event_loop)


@click.command("quantize")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("--group-size", type=int, default=128, show_default=True)
@click.option("--lm-head", type=click.Choice(["16bit", "int4"]), default="16bit", show_default=True)
@click.option(
    "--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default="bfloat16", show_default=True
)
def quantize(src: Path, dst: Path, group_size: int, lm_head: str, dtype: str) -> None:
    """INT4 weight-only copy of SRC in DST (16-bit embeddings and norms); prints the sizes on disk."""
    from clawdbot.services.inference.model.save import quantize_folder

    report = quantize_folder(src, dst, group_size=group_size, lm_head=lm_head == "int4", dtype=dtype)
    mb = 1 << 20
    click.echo(
        f"{src} ({int(report['source_bytes']) / mb:.1f} MiB) -> {dst} ({int(report['quantized_bytes']) / mb:.1f} MiB)"
    )
    click.echo(json.dumps(report))
