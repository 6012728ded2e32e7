"""Greedy replies of a trained demo model on held-out prompts, scored against the references.

Needs only torch + transformers and a file of prompt ids (made by `clawdbot.demo.tokens.dev_set`),
so it runs on the GPU machine right after training. `--engine ours` decodes with our inference
engine instead (`--quantization int4` for the INT4 path), to compare the two on the same prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoTokenizer, MistralForCausalLM


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dev", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--engine", choices=["transformers", "ours"], default="transformers")
    parser.add_argument("--quantization", choices=["none", "int4"], default="none")
    args = parser.parse_args()
    if args.engine == "ours":
        ours(args)
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(str(args.model))
    model = MistralForCausalLM.from_pretrained(
        str(args.model), dtype=torch.bfloat16 if device == "cuda" else torch.float32
    )
    model.to(device)  # type: ignore[arg-type]  # transformers' typed wrapper of nn.Module.to
    model.eval()
    rows = [json.loads(line) for line in args.dev.read_text(encoding="utf-8").splitlines()[: args.limit]]
    eos = [8185, 8183]
    scores: dict[str, list[int]] = defaultdict(list)
    examples: list[dict[str, object]] = []
    for start in range(0, len(rows), args.batch):
        chunk = rows[start : start + args.batch]
        width = max(len(r["prompt_ids"]) for r in chunk)
        ids = torch.full((len(chunk), width), 8183, dtype=torch.long)
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
                pad_token_id=8183,
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
        text = str(tok.decode([t for t in ids if t not in (8185, 8183)]))
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
