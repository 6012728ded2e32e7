"""Greedy replies of a trained demo model on held-out prompts, scored against the references.

Needs only torch + transformers and a file of prompt ids (made by `clawdbot.demo.tokens.dev_set`),
so it runs on the GPU machine right after training.
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
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(str(args.model))
    model = (
        MistralForCausalLM.from_pretrained(
            str(args.model), dtype=torch.bfloat16 if device == "cuda" else torch.float32
        )
        .to(device)
        .eval()
    )
    rows = [json.loads(line) for line in args.dev.read_text(encoding="utf-8").splitlines()[: args.limit]]
    eos = [8185, 8183]
    scores: dict[str, list[int]] = defaultdict(list)
    examples = []
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
            text = tok.decode([t for t in out[i, width:].tolist() if t not in eos], skip_special_tokens=False)
            ok = int(text.strip() == r["reference"].strip())
            scores[r["kind"]].append(ok)
            scores["all"].append(ok)
            if len(examples) < 12 or (not ok and len(examples) < 30):
                examples.append({"kind": r["kind"], "ok": ok, "got": text, "want": r["reference"]})
    report = {k: round(sum(v) / len(v), 3) for k, v in sorted(scores.items())}
    print(json.dumps({"exact_match": report, "n": len(rows)}, ensure_ascii=False))
    json.dump({"exact_match": report, "examples": examples}, sys.stderr, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
