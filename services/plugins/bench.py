"""Benchmark of the plugin pipeline on a plugins.yaml (default: the example shop), JSON on stdout.

    python -m clawdbot.services.plugins.bench [--plugins FILE] [--rounds 20]

Measures set-up time, Preprocess latency per plugin and per turn (text turns in Chinese and
English, an image turn with a QR code and OCR), Postprocess latency and stream filtering speed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clawdbot.services.plugins.loader import PluginSet, load_plugin_set
from clawdbot.services.plugins.pipeline import postprocess, preprocess
from clawdbot.services.plugins.settings import EXAMPLE_PLUGINS_FILE
from clawdbot.services.plugins.streaming import StreamPipeline
from clawdbot.services.plugins.types import ImageInput, InputState, Message, ReplyState, Turn

TEXT_TURNS = [
    "我的订单SO20261125001到哪了？电话13812345678",
    "退款多久能到账？",
    "小米14有几种颜色，多少钱？",
    "Where is my order SO20261125008?",
    "Can I return the FreeBuds Pro 3 after opening them?",
    "How long is the warranty on the ClawHome robot vacuum?",
]
REPLY = (
    "您好，订单SO20261125001已于11月23日从上海仓发出，承运商顺丰速运，单号SF1420261123887，预计11月26日送达。"
    "如有问题请拨打400-820-1234。Your order has shipped and should arrive on Nov 26; the price was 3999 CNY. "
) * 4


def qr_image_url() -> str:
    import numpy as np
    import zxingcpp
    from PIL import Image, ImageDraw

    qr = Image.fromarray(
        np.array(zxingcpp.create_barcode("SO20261125004", zxingcpp.BarcodeFormat.QRCode).to_image(scale=6))
    )
    canvas = Image.new("RGB", (640, 360), (235, 240, 250))
    canvas.paste(qr.convert("RGB"), (20, 20))
    ImageDraw.Draw(canvas).rectangle([300, 60, 600, 300], fill=(200, 40, 40))
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def state(text: str, images: Sequence[str] = ()) -> InputState:
    inputs = [ImageInput(url, i) for i, url in enumerate(images)]
    return InputState(
        Turn(tenant="bench", session_id=f"b{time.monotonic_ns()}"),
        [Message("user", text, tuple(inputs))],
        text,
        inputs,
    )


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "n": len(ordered),
    }


async def measure(plugin_set: PluginSet, rounds: int) -> dict[str, Any]:
    per_plugin: dict[str, list[float]] = defaultdict(list)
    turns: list[float] = []
    for _ in range(rounds):
        for text in TEXT_TURNS:
            started = time.perf_counter()
            result = await preprocess(plugin_set, state(text))
            turns.append((time.perf_counter() - started) * 1000)
            for outcome in result.outcomes:
                per_plugin[outcome.plugin].append(outcome.latency_ms)
    image_url = qr_image_url()
    image_turns = []
    for _ in range(max(1, rounds // 5)):
        started = time.perf_counter()
        await preprocess(plugin_set, state("看看这张图", [image_url]))
        image_turns.append((time.perf_counter() - started) * 1000)
    post = []
    for _ in range(rounds):
        started = time.perf_counter()
        await postprocess(plugin_set, ReplyState(Turn(metadata={"language": "zh"}), REPLY))
        post.append((time.perf_counter() - started) * 1000)
    stream_chars, started = 0, time.perf_counter()
    for _ in range(rounds):
        pipeline = StreamPipeline(plugin_set, Turn(metadata={"language": "zh"}))
        for i in range(0, len(REPLY), 3):
            pipeline.feed(REPLY[i : i + 3])
        await pipeline.finish()
        stream_chars += len(REPLY)
    stream_seconds = time.perf_counter() - started
    return {
        "text_turn_preprocess": summary(turns),
        "image_turn_preprocess": summary(image_turns),
        "postprocess": summary(post),
        "stream_filter_chars_per_s": round(stream_chars / stream_seconds),
        "per_plugin_preprocess": {name: summary(values) for name, values in per_plugin.items()},
    }


async def main_async(file: Path, rounds: int) -> dict[str, Any]:
    started = time.perf_counter()
    plugin_set = load_plugin_set(file)
    await plugin_set.setup()
    setup_ms = (time.perf_counter() - started) * 1000
    try:
        results = await measure(plugin_set, rounds)
    finally:
        await plugin_set.close()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "plugins_file": str(file),
        "setup_ms": round(setup_ms, 1),
        **results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--plugins", type=Path, default=EXAMPLE_PLUGINS_FILE)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args.plugins, args.rounds)), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
