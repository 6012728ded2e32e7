"""Grounded decoding's cost on the CPU: one stream, grounding on vs off, the bundled model.

    python -m bench.grounding [--model clawdbot/models/shop-assistant-int4] [--tokens 128] [--rounds 7]

Prints one JSON object: per mode ("off", "on") the median decode time per token over `rounds`
generations (the two modes interleaved, the first token excluded: prefill is the same), the ratio,
and the sampler alone (one `sample` call on one row of the vocabulary, with and without the
grounding mask and automaton update). The prompt is a ChatML turn whose system text carries an
order record; the grounding text is that record. Greedy, EOS ignored, so both modes decode the
same number of tokens; the replies (as text) are in the output to show what the constraint did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from clawdbot.services.inference.builder import build_engine
from clawdbot.services.inference.engine import Engine
from clawdbot.services.inference.grounding import Trie, digit_runs
from clawdbot.services.inference.sampler import SamplingTensors, sample
from clawdbot.services.inference.sequence import SamplingParams, Sequence
from clawdbot.services.inference.settings import InferenceSettings

ROOT = Path(__file__).resolve().parents[1]
RECORD = (
    "订单号 20261126884193，下单时间 2026-11-26 14:32，商品：无线降噪耳机 x2，单价 599.00 元，"
    "实付 1198.00 元。物流：顺丰 SF1420261123887，预计 11月29日 送达。客服电话 400-820-1234。"
    "Order 20261126884193 placed 2026-11-26, 2 x headphones at 599.00, paid 1198.00; tracking "
    "SF1420261123887, due Nov 29. Support: 400-820-1234."
)
QUESTION = "我的订单什么时候到？运单号是多少？"


def chat_prompt(tokenizer: Any) -> list[int]:
    text = (
        f"<|im_start|>system\n你是店铺客服。以下是订单信息：\n{RECORD}<|im_end|>\n"
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    )
    return list(tokenizer.encode(text).ids)


async def generate(
    engine: Engine, prompt: list[int], tokens: int, grounding: str | None, tag: str
) -> dict[str, Any]:
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    queue = engine.submit(Sequence(tag, list(prompt), params, grounding=grounding))
    ids: list[int] = []
    stamps: list[tuple[float, int]] = []
    while True:
        event = await queue.get()
        stamps.append((time.perf_counter(), len(event.tokens)))
        ids += [t.token for t in event.tokens]
        if event.finish is not None or event.error is not None:
            break
    (first, first_count), (last, _) = stamps[0], stamps[-1]
    return {"ids": ids, "ms_per_token": (last - first) * 1e3 / max(1, len(ids) - first_count)}


def invented(text: str, grounded: set[str]) -> list[str]:
    """The reply's digit runs that are not runs of the grounding; a run the length limit cut (at the
    very end) counts only if no grounded run starts with it."""
    runs = digit_runs(text)
    cut = runs.pop() if runs and text.rstrip()[-1:].isdigit() else None
    bad = {run for run in runs if run not in grounded}
    if cut is not None and not any(run.startswith(cut) for run in grounded):
        bad.add(cut)
    return sorted(bad)


def sampler_us(engine: Engine, grounded: bool, calls: int = 2000) -> float:
    """Microseconds per `sample` call on one greedy row, with or without a grounded row."""
    vocab = engine.config.vocab_size
    logits = torch.randn(1, vocab)
    none = torch.zeros(0, dtype=torch.long)
    t = SamplingTensors(none.float(), none, none.float(), none.float(), none, none, all_greedy=True)
    seq = Sequence("sampler", [1], SamplingParams(), grounding=RECORD)
    seq.trie = Trie.of(RECORD)
    tables = engine.runner.grounding
    assert tables is not None
    if grounded:
        t.grounding = tables.rows(torch.tensor([tables.slot(seq)]))
    for _ in range(50):
        sample(logits, t)
    start = time.perf_counter()
    for _ in range(calls):
        sample(logits, t)
    elapsed = time.perf_counter() - start
    tables.release(seq)
    return elapsed / calls * 1e6


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from tokenizers import Tokenizer

    settings = InferenceSettings(model=args.model, device="cpu", threads=args.threads, log_level="WARNING")
    engine, info = build_engine(settings)
    tokenizer = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    prompt = chat_prompt(tokenizer)
    engine.start()
    try:
        times: dict[str, list[float]] = {"off": [], "on": []}
        replies: dict[str, list[int]] = {}
        await generate(engine, prompt, 8, RECORD, "warm-up")
        for round_ in range(args.rounds):
            order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
            for mode in order:
                result = await generate(
                    engine, prompt, args.tokens, RECORD if mode == "on" else None, f"{mode}-{round_}"
                )
                times[mode].append(result["ms_per_token"])
                replies[mode] = result["ids"]
        sampler = {"off": sampler_us(engine, False), "on": sampler_us(engine, True)}
    finally:
        engine.stop()
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    grounded_runs = set(digit_runs(RECORD))
    text = {mode: tokenizer.decode(ids) for mode, ids in replies.items()}
    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "quantization": info.quantization,
        "vocab_size": info.vocab_size,
        "prompt_tokens": len(prompt),
        "output_tokens": args.tokens,
        "rounds": args.rounds,
        "decode_steps": settings.decode_steps,
        "ms_per_token": {"off": round(off, 3), "on": round(on, 3)},
        "ms_per_token_all": {mode: [round(v, 3) for v in values] for mode, values in times.items()},
        "on_vs_off": round(on / off, 4),
        # Each round's two runs are neighbours in time: their ratio drifts less with the host's load.
        "on_vs_off_paired_median": round(
            statistics.median(b / a for a, b in zip(times["off"], times["on"], strict=True)), 4
        ),
        "sampler_us_per_call": {mode: round(v, 1) for mode, v in sampler.items()},
        "grounding_trie_nodes": Trie.of(RECORD).num_nodes,
        "reply": text,
        "reply_runs_not_in_grounding": {mode: invented(t, grounded_runs) for mode, t in text.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "clawdbot" / "models" / "shop-assistant-int4")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report = asyncio.run(bench(args))
    text = json.dumps(report, indent=1, ensure_ascii=False)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
