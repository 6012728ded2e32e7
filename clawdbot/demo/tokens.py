"""Corpus samples -> token ids and loss masks, rendered by the serving tokenizer's own chat path.

Only the assistant messages marked `"train": true` are learned: their content and the token that
closes the turn (`<|im_end|>` for the bundled model, `<end_of_turn>` for Gemma: whichever of the
tokenizer's end ids the template writes). Everything else (system context, history, tool results)
is read, not predicted. Any tokenizer folder with a chat template works (`--model`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from clawdbot.services.tokenizer.tokenizer import TextTokenizer


def sample_tokens(tok: TextTokenizer, sample: dict[str, Any]) -> tuple[list[int], list[bool]]:
    messages = [{k: v for k, v in m.items() if k != "train"} for m in sample["messages"]]
    tools = sample.get("tools", [])
    ids, _ = tok.render_chat(messages, tools, add_generation_prompt=False)
    learn = [False] * len(ids)
    ends = turn_end_ids(tok)
    for i, message in enumerate(sample["messages"]):
        if not message.get("train"):
            continue
        before, _ = tok.render_chat(messages[:i], tools, add_generation_prompt=True)
        through, _ = tok.render_chat(messages[: i + 1], tools, add_generation_prompt=False)
        if through != ids[: len(through)] or before != through[: len(before)]:
            raise ValueError("the chat template is not prefix-stable for this sample")
        stop = last_end(through, ends)
        for pos in range(len(before), stop + 1):
            learn[pos] = True
    return ids, learn


def turn_end_ids(tok: TextTokenizer) -> set[int]:
    """The ids that may close an assistant turn: the tokenizer's end-of-sequence ids."""
    ends = set(tok.eos_token_ids)
    if "<|im_end|>" in tok.added:
        ends.add(tok.added["<|im_end|>"])
    return ends


def last_end(ids: list[int], ends: set[int]) -> int:
    return max(i for i, token in enumerate(ids) if token in ends)


def encode_corpus(lines: Iterable[str], tok: TextTokenizer, max_len: int) -> dict[str, np.ndarray]:
    """Flat arrays: ids (uint16, or uint32 past 65,536 ids), learn mask (bool), offsets (int64)."""
    all_ids: list[int] = []
    all_learn: list[bool] = []
    offsets = [0]
    for line in lines:
        ids, learn = sample_tokens(tok, json.loads(line))
        if len(ids) > max_len:
            continue
        all_ids += ids
        all_learn += learn
        offsets.append(len(all_ids))
    return {
        "ids": np.asarray(all_ids, dtype=np.uint16 if tok.vocab_size <= 2**16 else np.uint32),
        "learn": np.asarray(all_learn, dtype=bool),
        "offsets": np.asarray(offsets, dtype=np.int64),
    }


def save_tokens(corpus: Path, out: Path, tok: TextTokenizer, max_len: int) -> dict[str, int]:
    with corpus.open(encoding="utf-8") as f:
        arrays = encode_corpus(f, tok, max_len)
    np.savez_compressed(out, ids=arrays["ids"], learn=arrays["learn"], offsets=arrays["offsets"])
    return {
        "samples": len(arrays["offsets"]) - 1,
        "tokens": len(arrays["ids"]),
        "learned_tokens": int(arrays["learn"].sum()),
    }


def dev_set(corpus: Path, out: Path, tok: TextTokenizer) -> int:
    """Prompt ids up to the first learned message, with that message's text as the reference."""
    rows = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        messages = [{k: v for k, v in m.items() if k != "train"} for m in sample["messages"]]
        first = next(i for i, m in enumerate(sample["messages"]) if m.get("train"))
        prompt, _ = tok.render_chat(messages[:first], sample.get("tools", []), add_generation_prompt=True)
        through, _ = tok.render_chat(
            messages[: first + 1], sample.get("tools", []), add_generation_prompt=False
        )
        end = last_end(through, turn_end_ids(tok))
        reference = tok.decode_one(through[len(prompt) : end])
        rows.append(
            json.dumps(
                {
                    "prompt_ids": prompt,
                    "reference": reference,
                    "kind": sample["kind"],
                    "lang": sample["lang"],
                },
                ensure_ascii=False,
            )
        )
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    """`python -m clawdbot.demo.tokens CORPUS OUT.npz [--model DIR] [--max-len N] [--dev DEV.jsonl]`."""
    import argparse

    from clawdbot.services.tokenizer.assets import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL_DIR, help="tokenizer + chat template folder"
    )
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--dev", type=Path, default=None, help="also write the dev prompts of CORPUS here")
    args = parser.parse_args(argv)
    tok = TextTokenizer(args.model)
    if args.dev is not None:
        print(json.dumps({"dev": dev_set(args.corpus, args.dev, tok)}))
        return
    print(json.dumps(save_tokens(args.corpus, args.out, tok, args.max_len)))


if __name__ == "__main__":
    main()
