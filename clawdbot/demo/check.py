"""Greedy replies of a trained demo model on held-out prompts, scored against the references.

Needs only torch + transformers and a file of prompt ids (made by `clawdbot.demo.tokens.dev_set`),
so it runs on the GPU machine right after training. `--engine ours` decodes with our inference
engine instead (`--quantization int4` for the INT4 path), to compare the two on the same prompts.
`--adapter DIR` scores a LoRA adapter on the `--model` base (merged with peft first).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def stop_ids(model_dir: Path) -> tuple[list[int], int]:
    """End-of-turn ids and the padding id the folder's generation config names (the small model's)."""
    path = model_dir / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    eos = config.get("eos_token_id", [8185, 8183])
    eos = eos if isinstance(eos, list) else [eos]
    if 106 in eos or config.get("bos_token_id") == 2:  # Gemma: <end_of_turn> closes a turn
        eos = sorted({*eos, 106})
    return [int(i) for i in eos], int(config.get("pad_token_id", 8183))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dev", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--engine", choices=["transformers", "ours"], default="transformers")
    parser.add_argument("--quantization", choices=["none", "int4"], default="none")
    parser.add_argument("--adapter", type=Path, default=None, help="a peft LoRA adapter for --model")
    args = parser.parse_args()
    if args.engine == "ours":
        ours(args)
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(str(args.model))
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(args.model), dtype=torch.bfloat16 if device == "cuda" else torch.float32
    )
    if args.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(args.adapter)).merge_and_unload()
    model.to(device)
    model.eval()
    rows = [json.loads(line) for line in args.dev.read_text(encoding="utf-8").splitlines()[: args.limit]]
    eos, pad = stop_ids(args.model)
    scores: dict[str, list[int]] = defaultdict(list)
    examples: list[dict[str, object]] = []
    for start in range(0, len(rows), args.batch):
        chunk = rows[start : start + args.batch]
        width = max(len(r["prompt_ids"]) for r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(chunk):  # left padding for batched generation
            ids[i, width - len(r["prompt_ids"]) :] = torch.tensor(r["prompt_ids"])
            mask[i, width - len(r["prompt_ids"]) :] = 1
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=160,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=pad,
            )
        for i, r in enumerate(chunk):
            text = str(
                tok.decode([t for t in out[i, width:].tolist() if t not in eos], skip_special_tokens=False)
            )
            ok = int(text.strip() == r["reference"].strip())
            scores[r["kind"]].append(ok)
            scores["all"].append(ok)
            if len(examples) < 12 or (not ok and len(examples) < 30):
                examples.append({"kind": r["kind"], "ok": ok, "got": text, "want": r["reference"]})
    report = {k: round(sum(v) / len(v), 3) for k, v in sorted(scores.items())}
    print(json.dumps({"exact_match": report, "n": len(rows)}, ensure_ascii=False))
    json.dump({"exact_match": report, "examples": examples}, sys.stderr, ensure_ascii=False, indent=1)


def ours(args: argparse.Namespace) -> None:
    """The same scoring through our engine (greedy, batched by the scheduler)."""
    import asyncio

    from clawdbot.services.inference.builder import build_engine
    from clawdbot.services.inference.sequence import SamplingParams
    from clawdbot.services.inference.settings import InferenceSettings

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(str(args.model))
    rows = [json.loads(line) for line in args.dev.read_text(encoding="utf-8").splitlines()[: args.limit]]
    settings = InferenceSettings(
        model=args.model,
        quantization=args.quantization,
        device=device,
        max_num_seqs=args.batch,
        max_num_batched_tokens=4096,
        max_waiting=len(rows) + 1,
    )
    engine, _ = build_engine(settings)
    engine.start()
    params = SamplingParams(temperature=0.0, max_tokens=160)

    async def run() -> list[list[int]]:
        return await asyncio.gather(
            *(engine.generate(r["prompt_ids"], params, f"check-{i}") for i, r in enumerate(rows))
        )

    try:
        outputs = asyncio.run(run())
    finally:
        engine.stop()
    scores: dict[str, list[int]] = defaultdict(list)
    for r, ids in zip(rows, outputs, strict=True):
        text = str(tok.decode([t for t in ids if t not in stop_ids(args.model)[0]]))
        ok = int(text.strip() == r["reference"].strip())
        scores[r["kind"]].append(ok)
        scores["all"].append(ok)
    report = {k: round(sum(v) / len(v), 3) for k, v in sorted(scores.items())}
    print(
        json.dumps(
            {
                "engine": "ours",
                "quantization": args.quantization,
                "device": device,
                "exact_match": report,
                "n": len(rows),
            }
        )
    )


if __name__ == "__main__":
    main()
